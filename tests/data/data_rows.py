"""Rows and a JSONL writer shared by the data tests (imported by name)."""

from __future__ import annotations

import json
from pathlib import Path

ROWS = [
    {"question": "What is 2+2?", "answer": "4", "id": "a", "topic": "math"},
    {"question": "Capital of France?", "answer": "Paris", "id": "b", "topic": "geo"},
    {"question": "Colour of the sky?", "answer": "Blue", "id": "c", "topic": "nature"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
