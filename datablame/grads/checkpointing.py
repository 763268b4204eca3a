"""Gradient (activation) checkpointing while featurizing, for models whose activations do not fit.

transformers checkpoints a decoder layer only when `gradient_checkpointing and training` are both
true on that layer, and featurizing runs in eval mode (no dropout, rows independent). So the
layers that carry the `gradient_checkpointing` switch get `.training = True` on themselves only
(not recursively: their dropout and attention submodules stay in eval mode), and everything else
stays as featurizing had it. The recompute in backward replays each layer's forward, so the
featurizer's module hooks see a second call there; `GradientFeaturizer` tells the two apart.
Features are the same as without checkpointing (tested to 1e-6); only peak memory and time change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from datablame.errors import DatablameError


def _checkpointable(model: nn.Module) -> nn.Module | None:
    """The outermost transformers model under `model` (a PEFT wrapper or the model itself) that
    supports activation checkpointing, or None."""
    for mod in model.modules():
        if getattr(mod, "supports_gradient_checkpointing", False) and hasattr(mod, "activation_checkpointing_enable"):
            return mod
    return None


@contextmanager
def checkpointed_layers(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Within the block, `model`'s layers recompute their activations in backward instead of
    keeping them (no-op when not `enabled`). Call it after `model.eval()`; the model's
    checkpointing state and training flags are restored on exit."""
    if not enabled:
        yield
        return
    hf = _checkpointable(model)
    if hf is None:
        raise DatablameError(
            f"model.gradient_checkpointing is on, but {type(model).__name__} does not support "
            "gradient checkpointing (only transformers models do)",
            "set model.gradient_checkpointing: false, or lower attribution.batch_size to fit memory",
        )
    was_on = bool(getattr(hf, "is_activation_checkpointing", False))  # transformers 5's name
    had_input_hooks = bool(getattr(hf, "_require_grads_hooks", None))
    if not was_on:
        # non-reentrant: the recompute needs no input that requires grad, and nested hooks are fine
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", None) is True]
    flags = [(m, m.training) for m in layers]
    for m in layers:
        m.training = True  # this module only: the switch transformers reads, not dropout below it
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        if not was_on:
            hf.activation_checkpointing_disable()
            if not had_input_hooks and hasattr(hf, "disable_input_require_grads"):
                hf.disable_input_require_grads()  # enable() added them; disable() leaves them (non-PEFT)
