"""Tiny models, a fake trained run directory and small input files for the evaluate tests."""

from __future__ import annotations

import json

import pytest
import torch

from datablame.config import ModelConfig, TinyModelConfig

WORDS = ["apple", "banana", "kiwi", "mango", "plum", "grape", "lemon", "cherry"]
TEXTS = [f"Question: what colour is the {w}?\nAnswer: the {w} is colour number {i}. A B C D"
         for i, w in enumerate(WORDS * 4)]
TINY = TinyModelConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=300, max_position_embeddings=512)


def tiny_loaded(seed: int):
    """A tiny random Llama (weights from `seed`) with the corpus tokenizer, as load_model returns it."""
    from datablame.models.loading import LoadedModel, model_fingerprint
    from datablame.models.tiny import build_tiny_llama, train_tokenizer

    tok = train_tokenizer(TEXTS, TINY.vocab_size)
    model = build_tiny_llama(TINY, tok, seed).eval()
    return LoadedModel(model, tok, f"tiny(seed={seed})", model_fingerprint(model))


@pytest.fixture
def tiny_pair():
    return tiny_loaded(0), tiny_loaded(1)


@pytest.fixture
def tiny_run(tmp_path):
    """A run directory as `datablame train` leaves it: config, model/base, model/final, summary."""
    from pipeline_config import small_config

    from datablame.layout import RunLayout
    from datablame.models.loading import save_model
    from datablame.utils.io import atomic_write_json, atomic_write_text

    run = tmp_path / "run"
    cfg = small_config(run)
    cfg = cfg.model_copy(update={"model": ModelConfig(kind="tiny", tiny=TINY, device="cpu", max_length=96)})
    lay = RunLayout(run)
    run.mkdir()
    atomic_write_text(lay.resolved_config, cfg.to_yaml())
    base, tuned = tiny_loaded(0), tiny_loaded(1)
    save_model(base.model, base.tokenizer, lay.base_model)
    save_model(tuned.model, tuned.tokenizer, lay.final_model)
    history = [{"loss": 4.0 - s / 4, "learning_rate": 1e-3 * (1 - s / 8), "grad_norm": 1.0, "epoch": s / 4, "step": s}
               for s in range(1, 9)]
    history.append({"train_runtime": 2.0, "train_samples_per_second": 40.0, "train_steps_per_second": 4.0,
                    "train_loss": 3.0, "epoch": 2.0, "step": 8})
    atomic_write_json(lay.train_summary, {"seconds": 2.0, "log_history": history})
    return run


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "apple", "prompt": "Question: what colour is the apple?\nAnswer:", "reference": "the apple is red"},
        {"prompt": "Question: what colour is the kiwi?\nAnswer:", "references": ["green", "the kiwi is green"]},
        {"prompt": "Question: what colour is the plum?\nAnswer:", "reference": "purple"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


MMLU_ROWS = [
    ["What is 1 + 1?", "1", "2", "3", "4", "B"],
    ["Which fruit is yellow?", "apple", "kiwi", "banana", "plum", "C"],
    ["Which is a colour?", "red", "seven", "run", "under", "A"],
]


@pytest.fixture
def mmlu_file(tmp_path):
    """Three questions of one subject in the original headerless MMLU CSV layout."""
    import csv

    path = tmp_path / "basic_facts_test.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(MMLU_ROWS)
    return path


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))
