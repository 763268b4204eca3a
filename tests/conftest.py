"""Shared fixtures: a tiny random Llama and a toy tokenizer-free batch (no download)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def toy_encoded():
    """Six rows of different lengths with answer-only labels (prompt tokens ignored)."""
    from datablame.models.tokenize import IGNORE, Encoded

    g = torch.Generator().manual_seed(1)
    ids, labels = [], []
    for n, p in [(9, 4), (14, 6), (6, 2), (11, 8), (17, 5), (8, 3)]:
        x = torch.randint(1, 97, (n,), generator=g).tolist()
        ids.append(x)
        labels.append([IGNORE] * p + x[p:])
    return Encoded(ids, labels)
