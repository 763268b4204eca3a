"""Shared helpers of the cross-checkpoint method tests (imported by name)."""

from __future__ import annotations

from pathlib import Path

from datablame.config import TinyModelConfig
from datablame.models import build_tiny_llama, save_model, train_tokenizer
from datablame.train import finetune


def train_on_subset(cfg, inputs, row_ids: list[str], out: Path) -> Path:
    """Continue training the run's final model on `row_ids` only; the new model's directory.

    Between the final model ("old") and this one ("new") only these rows were trained on,
    so they are the true causes of the change: a fair check for cross-checkpoint methods.
    """
    idx = inputs.corpus.index_of()
    training = cfg.training.model_copy(update={"num_train_epochs": 4, "save_steps": 1000, "learning_rate": 3e-3})
    from datablame.models import load_model

    loaded = load_model(cfg.model, path_override=str(Path(cfg.output.dir) / "model" / "final"))
    res = finetune(loaded.model, loaded.tokenizer, inputs.corpus, training, cfg.model, out,
                   indices=[idx[r] for r in row_ids], show_progress=False)
    return Path(res.final_dir)


def save_mismatched(cfg, inputs, out: Path, *, other_tokenizer: bool) -> Path:
    """A saved tiny model that differs from the run's: another width, or another tokenizer."""
    texts = [r.text for r in inputs.corpus]
    if other_tokenizer:
        tok = train_tokenizer([t[::-1] for t in texts], cfg.model.tiny.vocab_size)
        tiny = cfg.model.tiny
    else:
        tok = inputs.tokenizer
        tiny = TinyModelConfig(**{**cfg.model.tiny.model_dump(), "hidden_size": 32, "intermediate_size": 64})
    save_model(build_tiny_llama(tiny, tok, 1), tok, out)
    return out
