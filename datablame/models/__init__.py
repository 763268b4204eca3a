"""Models: load (hub, local, tiny random, offline SmolLM2), save, fingerprint."""

from datablame.models.gguf import load_smollm2
from datablame.models.loading import (
    LoadedModel,
    load_model,
    model_fingerprint,
    resolve_device,
    save_model,
)
from datablame.models.tiny import build_tiny_llama, train_tokenizer

__all__ = [
    "LoadedModel",
    "build_tiny_llama",
    "load_model",
    "load_smollm2",
    "model_fingerprint",
    "resolve_device",
    "save_model",
    "train_tokenizer",
]
