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


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    """A trained small planted run, shared by the method tests: (cfg, make_inputs, truth).

    `make_inputs()` returns fresh AttributionContext (empty cache) for the trained model;
    `truth` maps query ids to the planted row ids. Checkpoints are kept (save_steps=3).
    """
    from pipeline_config import small_config

    from datablame import api

    cfg = small_config(tmp_path_factory.mktemp("planted_run"), training={"num_train_epochs": 6})
    api.train(cfg)

    def make_inputs():
        return api.prepare_inputs(cfg)[0]

    return cfg, make_inputs, api.load_corpus(cfg)[2]


@pytest.fixture(scope="session")
def tiny_training_setting():
    """(corpus, model config): a small planted corpus and a 2-layer hidden-32 tiny Llama that
    trains in a second, shared by the training and large-model-knob tests."""
    from datablame.config import ModelConfig, PlantedConfig
    from datablame.data import make_planted

    corpus = make_planted(PlantedConfig(n_entities=6, n_facts=2, plants_per_fact=2, decoys_per_fact=1,
                                        background_per_entity=3)).corpus
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 300}
    return corpus, ModelConfig(kind="tiny", max_length=64, tiny=tiny)
