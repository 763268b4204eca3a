"""Tiny configs shared by the model tests (no download, a few ms per model)."""

from __future__ import annotations

import pytest

from datablame.config import ModelConfig, TinyModelConfig

WORDS = ["apple", "banana", "kiwi", "mango", "plum", "grape", "lemon", "cherry"]
TEXTS = [
    f"Question: what colour is the {w}?\nAnswer: the {w} is colour number {i}."
    for i, w in enumerate(WORDS * 6)
]


@pytest.fixture
def tiny_cfg() -> TinyModelConfig:
    return TinyModelConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
        max_position_embeddings=64,
    )


@pytest.fixture
def model_cfg(tiny_cfg: TinyModelConfig) -> ModelConfig:
    return ModelConfig(kind="tiny", tiny=tiny_cfg, device="cpu")


@pytest.fixture
def texts() -> list[str]:
    return list(TEXTS)
