"""Choose which linear layers' weight (and bias) gradients make up a row's gradient feature.

"Linear" means `nn.Linear` (weight out x in) or transformers' `Conv1D` (GPT-2; weight in x out,
the transpose, as PEFT's `fan_in_fan_out`); features are laid out out x in for both. A PEFT
LoRA layer matched by the pattern is taken as its frozen `base_layer`. A module whose weight is
shared with another module (a tied `lm_head`/embedding) is refused: its hooked gradient would
miss the other use.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from datablame.config import ModuleSelection
from datablame.errors import DatablameError
from datablame.grads.presets import (
    PRESETS,
    decoder_layers,
    layer_index,
    model_type,
    preset_pattern,
    warn_partial_blocks,
)
from datablame.models.layers import is_conv1d, is_linear  # noqa: F401 (re-exported)

_LORA = re.compile(r"lora_[AB]\.[^.]+$")
_FALLBACK = r"mlp\.(gate_proj|up_proj|down_proj)$"  # architectures without a preset (Llama-style names)


def linear_dims(mod: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or Conv1D."""
    if is_conv1d(mod):
        return int(mod.weight.shape[0]), int(mod.weight.shape[1])
    return int(mod.in_features), int(mod.out_features)


def uses_bias(mod: nn.Module, sel: ModuleSelection | None = None) -> bool:
    """Whether the module's bias is part of its feature (it has one and `bias` is on)."""
    return getattr(mod, "bias", None) is not None and (sel is None or sel.bias)


def weight_grad_as_features(mod: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """A weight gradient in the features' out x in layout (Conv1D's is in x out)."""
    return grad.T if is_conv1d(mod) else grad


def parse_layers(spec: str | None) -> set[int] | None:
    """"8-12" -> {8..12}; "0,2,5-6" -> {0,2,5,6}; None/"" -> None (all layers)."""
    if spec is None or str(spec).strip() in ("", "all"):
        return None
    out: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise DatablameError(f"layer range {part!r} is empty", "write it as low-high, e.g. 8-12")
            out.update(range(lo, hi + 1))
        elif part.isdigit():
            out.add(int(part))
        else:
            raise DatablameError(
                f"cannot read layer spec {spec!r}", "use e.g. '8-12' or '0,2,4' in attribution.modules.layers"
            )
    return out


def select_pattern(model: nn.Module, sel: ModuleSelection) -> str:
    """The regex used: `sel.pattern`, or the architecture preset when it is null."""
    if sel.lora_only:
        return _LORA.pattern
    if sel.pattern is not None:
        return sel.pattern
    return preset_pattern(model, sel.preset) or _FALLBACK


def shared_weights(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> every `module.param` name that holds it, for parameters held twice."""
    owners: dict[int, list[str]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False, remove_duplicate=False):
            owners.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
    return {k: v for k, v in owners.items() if len(v) > 1}


def select_modules(model: nn.Module, sel: ModuleSelection, *, warn: bool = True) -> list[tuple[str, nn.Module]]:
    """Linear (nn.Linear / Conv1D) modules matching the selection, in model order. Raises if
    none match, or if a chosen module's weight is shared (tied) with another module."""
    layers = parse_layers(sel.layers)
    regex = select_pattern(model, sel)
    try:
        pattern = re.compile(regex)
    except re.error as err:
        raise DatablameError(
            f"attribution.modules.pattern {sel.pattern!r} is not a valid regular expression ({err.msg})",
            "fix attribution.modules.pattern (a Python regex searched in module names; escape . ( [ with \\)",
        ) from None
    layer_list = decoder_layers(model)
    chosen: list[tuple[str, nn.Module]] = []
    candidates: list[str] = []
    for name, mod in model.named_modules():
        if not is_linear(mod):
            continue
        key = name.removesuffix(".base_layer")  # a PEFT LoRA layer's frozen base weight
        candidates.append(key)
        if not pattern.search(key):
            continue
        if not sel.lora_only and _LORA.search(name):
            continue  # base-pattern selection never picks adapter internals by accident
        if layers is not None:
            idx = layer_index(name, layer_list)
            if idx is None or idx not in layers:
                continue
        chosen.append((name, mod))
    if not chosen:
        linear = [n for n, m in model.named_modules() if is_linear(m)][:8]
        where = f" (the {sel.preset} preset of model_type {model_type(model)!r})" if sel.pattern is None and not sel.lora_only else ""
        raise DatablameError(
            f"no linear module matches pattern {pattern.pattern!r}{where}"
            + (f" in layers {sorted(layers)}" if layers else "")
            + (" (lora_only: does the model have a LoRA adapter?)" if sel.lora_only else "")
            + f"; some module names: {linear}",
            "change attribution.modules.pattern / layers"
            + ("" if model_type(model) in PRESETS else f" (presets exist for {', '.join(sorted(PRESETS))})"),
        )
    _refuse_shared(model, chosen)
    if warn and not sel.lora_only:
        warn_partial_blocks(model, [n.removesuffix(".base_layer") for n, _ in chosen], candidates, layer_list)
    return chosen


def _refuse_shared(model: nn.Module, chosen: list[tuple[str, nn.Module]]) -> None:
    shared = shared_weights(model)
    names: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(n)
    for name, mod in chosen:
        if len(names.get(id(mod), [])) > 1:
            raise DatablameError(
                f"module {name} is registered more than once in the model ({names[id(mod)]}); "
                "its per-row gradient cannot be taken from one hook",
                "leave it out of attribution.modules.pattern",
            )
        for pname in ("weight", "bias"):
            p = getattr(mod, pname, None)
            if p is not None and id(p) in shared:
                others = [o for o in shared[id(p)] if o != f"{name}.{pname}"]
                raise DatablameError(
                    f"the {pname} of {name} is shared with {others} (tied weights): a hook on {name} "
                    "sees only one use of it, so its gradient would miss the others",
                    "leave it out of attribution.modules.pattern (e.g. select the MLP preset), or untie the "
                    "weights (tie_word_embeddings: false) before training",
                )


def feature_dim(mod: nn.Module, k_in: int | None, k_out: int | None, bias: bool = False) -> int:
    d_in, d_out = linear_dims(mod)
    return min(k_out or d_out, d_out) * (min(k_in or d_in, d_in) + int(bias and uses_bias(mod)))


def module_param_count(modules: list[tuple[str, nn.Module]], bias: bool = False) -> int:
    return sum(m.weight.numel() + (m.bias.numel() if bias and uses_bias(m) else 0) for _, m in modules)
