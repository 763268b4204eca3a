"""Choose which linear layers' weight gradients make up a row's gradient feature."""

from __future__ import annotations

import re

import torch
from torch import nn

from datablame.config import ModuleSelection
from datablame.errors import DatablameError

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_LORA = re.compile(r"lora_[AB]\.[^.]+$")


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


def select_modules(model: nn.Module, sel: ModuleSelection) -> list[tuple[str, nn.Linear]]:
    """Linear modules matching the selection, in model order. Raises if none match."""
    layers = parse_layers(sel.layers)
    try:
        pattern = re.compile(_LORA.pattern if sel.lora_only else sel.pattern)
    except re.error as err:
        raise DatablameError(
            f"attribution.modules.pattern {sel.pattern!r} is not a valid regular expression ({err.msg})",
            "fix attribution.modules.pattern (a Python regex searched in module names; escape . ( [ with \\)",
        ) from None
    chosen: list[tuple[str, nn.Linear]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or not pattern.search(name):
            continue
        if not sel.lora_only and _LORA.search(name):
            continue  # base-pattern selection never picks adapter internals by accident
        if layers is not None:
            m = _LAYER.search(name)
            if m is None or int(m.group(1)) not in layers:
                continue
        chosen.append((name, mod))
    if not chosen:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise DatablameError(
            f"no linear module matches pattern {pattern.pattern!r}"
            + (f" in layers {sorted(layers)}" if layers else "")
            + (" (lora_only: does the model have a LoRA adapter?)" if sel.lora_only else "")
            + f"; some module names: {linear}",
            "change attribution.modules.pattern / layers",
        )
    return chosen


def feature_dim(mod: nn.Linear, k_in: int | None, k_out: int | None) -> int:
    return (k_out or mod.out_features) * (k_in or mod.in_features)


def module_param_count(modules: list[tuple[str, nn.Linear]]) -> int:
    return sum(int(torch.tensor(m.weight.shape).prod()) for _, m in modules)
