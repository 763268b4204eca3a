"""Helpers for the data tests: write tiny files and build DataConfigs."""

from __future__ import annotations

import pytest
from data_rows import ROWS

from datablame.config import DataConfig


@pytest.fixture
def rows() -> list[dict]:
    return [dict(r) for r in ROWS]


@pytest.fixture
def make_cfg():
    def make(path, **kw) -> DataConfig:
        return DataConfig(path=str(path), **kw)

    return make
