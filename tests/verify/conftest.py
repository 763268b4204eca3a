"""A tiny trained and attributed planted run for the verification tests: 14 rows (2 facts
planted by 3 rows each), a 1-layer hidden-32 Llama that trains in about two seconds, so a
test can afford a dozen retrainings."""

from __future__ import annotations

import pytest
from pipeline_config import small_config


def tiny_config(out):
    """`small_config` shrunk: 3 entities, a 1-layer hidden-32 Llama, 10 epochs, no checkpoints."""
    return small_config(
        out,
        name="tiny-verify",
        data={"planted": {"n_entities": 3, "n_facts": 2, "plants_per_fact": 3, "decoys_per_fact": 1,
                          "background_per_entity": 2}},
        model={"max_length": 128,
               "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 512}},
        training={"num_train_epochs": 10, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
                  "save_steps": 1000, "logging_steps": 1000},
        attribution={"methods": ["grad_dot", "grad_cosine"], "batch_size": 8},
        verify={"ray": {"runner": "serial"}},
        lds={"ray": {"runner": "serial"}},
    )


@pytest.fixture(scope="session")
def verify_run(tmp_path_factory):
    """(cfg, truth): the tiny run, trained and attributed with grad_dot and grad_cosine."""
    from datablame import api

    cfg = tiny_config(tmp_path_factory.mktemp("verify_run"))
    api.run(cfg)
    return cfg, api.load_corpus(cfg)[2]
