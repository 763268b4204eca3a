"""The small planted-facts run config, the one copy shared by the tests and the benchmark
scripts (imported by name: pytest puts this directory on sys.path; a benchmark script adds
tests/ to sys.path first). A test or benchmark that needs other sizes passes overrides."""

from __future__ import annotations


def small_raw(out, **over) -> dict:
    """The raw dict of `small_config`: a 2-layer hidden-48 tiny Llama on 55 planted-facts rows
    with 3 queries, 2 epochs, a checkpoint every 3 steps. Each keyword replaces one top-level
    key: a dict is merged into that section one level deep (a nested dict such as
    `data.planted` or `model.tiny` is replaced whole), anything else replaces the value."""
    raw = {
        "name": "t",
        "data": {"source": "planted", "planted": {"n_entities": 10, "n_facts": 3, "plants_per_fact": 3,
                                                  "decoys_per_fact": 2, "background_per_entity": 4}},
        "model": {"kind": "tiny", "max_length": 96,
                  "tiny": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400}},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
                     "lr_scheduler_type": "constant", "save_steps": 3, "logging_steps": 50},
        "attribution": {"method": "grad_cosine", "top_k": 5, "batch_size": 7},
        "output": {"dir": str(out)},
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def small_config(out, **over):
    """A small planted-facts run (2-layer tiny Llama, ~60 rows) that trains in seconds."""
    from datablame.config import parse_config

    return parse_config(small_raw(out, **over))
