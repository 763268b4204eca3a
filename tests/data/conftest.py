"""Helpers for the data tests: write tiny files and build DataConfigs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datablame.config import DataConfig

ROWS = [
    {"question": "What is 2+2?", "answer": "4", "id": "a", "topic": "math"},
    {"question": "Capital of France?", "answer": "Paris", "id": "b", "topic": "geo"},
    {"question": "Colour of the sky?", "answer": "Blue", "id": "c", "topic": "nature"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def rows() -> list[dict]:
    return [dict(r) for r in ROWS]


@pytest.fixture
def make_cfg():
    def make(path, **kw) -> DataConfig:
        return DataConfig(path=str(path), **kw)

    return make
