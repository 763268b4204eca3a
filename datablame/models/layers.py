"""What kind of linear layer a torch module is. Only the module's type is looked at, so every
stage from model loading and LoRA wrapping up to the featurizer can ask (grads.modules
re-exports these)."""

from __future__ import annotations

from torch import nn


def is_conv1d(mod: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2 and relatives): y = x @ W + b with W [in, out]."""
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf") and getattr(mod, "weight", None) is not None


def is_linear(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or is_conv1d(mod)
