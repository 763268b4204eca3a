"""Per-architecture module presets and the decoder-layer list of a Hugging Face causal LM.

A preset names, per `config.model_type`, the regexes (searched in module names) of each
decoder block's MLP and attention projections. `attribution.modules.pattern: null` (the
default) uses the preset of `attribution.modules.preset` ("mlp", "attention" or
"mlp+attention"); for Llama-style models the MLP preset is `mlp\\.(gate_proj|up_proj|down_proj)$`.

Layer indices (`attribution.modules.layers`) count positions in the model's decoder-layer
list (`model.layers`, `transformer.h`, `gpt_neox.layers`, `model.decoder.layers`, ...),
found as the `nn.ModuleList` with `config.num_hidden_layers` entries, so they work for every
naming scheme (and under a PEFT wrapper).
"""

from __future__ import annotations

import logging
import re

from torch import nn

log = logging.getLogger("datablame")

_LLAMA = {"mlp": r"mlp\.(gate_proj|up_proj|down_proj)$", "attention": r"self_attn\.(q_proj|k_proj|v_proj|o_proj)$"}

# model_type -> {"mlp": regex, "attention": regex}; each regex matches every projection of
# that part of a block (the partial-coverage warning relies on it)
PRESETS: dict[str, dict[str, str]] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "olmo": _LLAMA,
    "olmo2": _LLAMA,
    "phi": {"mlp": r"mlp\.(fc1|fc2)$", "attention": r"self_attn\.(q_proj|k_proj|v_proj|dense)$"},
    "phi3": {"mlp": r"mlp\.(gate_up_proj|down_proj)$", "attention": r"self_attn\.(qkv_proj|o_proj)$"},
    "gpt2": {"mlp": r"mlp\.(c_fc|c_proj)$", "attention": r"attn\.(c_attn|c_proj)$"},
    "gpt_neox": {"mlp": r"mlp\.(dense_h_to_4h|dense_4h_to_h)$", "attention": r"attention\.(query_key_value|dense)$"},
    "opt": {"mlp": r"layers\.\d+\.(fc1|fc2)$", "attention": r"self_attn\.(q_proj|k_proj|v_proj|out_proj)$"},
    "falcon": {"mlp": r"mlp\.(dense_h_to_4h|dense_4h_to_h)$",
               "attention": r"self_attention\.(query_key_value|dense)$"},
}
PRESET_PARTS = ("mlp", "attention", "mlp+attention")


def model_type(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "model_type", None)


def preset_pattern(model: nn.Module, part: str = "mlp") -> str | None:
    """The regex of `part` ("mlp", "attention", "mlp+attention") for this model's
    architecture, or None when `config.model_type` has no preset."""
    preset = PRESETS.get(model_type(model) or "")
    if preset is None:
        return None
    parts = part.split("+")
    return "|".join(f"(?:{preset[p]})" for p in parts) if len(parts) > 1 else preset[part]


def decoder_layers(model: nn.Module) -> tuple[str, int] | None:
    """(name of the decoder-layer ModuleList, its length), or None when none is found: the
    ModuleList with `config.num_hidden_layers` (n_layer) entries, else the longest one."""
    cfg = getattr(model, "config", None)
    want = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    lists = [(n, len(m)) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    exact = [x for x in lists if x[1] == want]
    if exact:
        return exact[0]
    return max(lists, key=lambda x: x[1]) if lists else None


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name: str, layers: tuple[str, int] | None) -> int | None:
    """The decoder-layer index of module `name` (None when outside the layer list)."""
    if layers is not None:
        prefix = f"{layers[0]}." if layers[0] else ""
        if name.startswith(prefix):
            head = name[len(prefix):].split(".", 1)[0]
            return int(head) if head.isdigit() else None
        return None
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


_warned: set[tuple] = set()


def warn_partial_blocks(model: nn.Module, chosen: list[str], candidates: list[str], layers: tuple[str, int] | None) -> list[str]:
    """Warn (once per selection) when, in some decoder layer, the selection takes part of a
    preset group (e.g. phi3's `down_proj` without the fused `gate_up_proj`). `candidates` are
    all hookable module names. Returns the warning lines."""
    preset = PRESETS.get(model_type(model) or "")
    if preset is None or not chosen:
        return []
    chosen_set = set(chosen)
    lines = []
    for part, regex in preset.items():
        rx = re.compile(regex)
        by_layer: dict[int | None, list[str]] = {}
        for n in candidates:
            if rx.search(n) and "lora_" not in n:
                by_layer.setdefault(layer_index(n, layers), []).append(n)
        for idx, names in by_layer.items():
            taken = [n for n in names if n in chosen_set]
            if taken and len(taken) < len(names):
                missing = [n.rsplit(".", 1)[-1] for n in names if n not in chosen_set]
                lines.append(f"the module selection covers only part of the {part} of layer {idx} "
                             f"({model_type(model)}): it leaves out {missing}")
    key = (model_type(model), tuple(chosen))
    if lines and key not in _warned:
        _warned.add(key)
        log.warning("%s%s; set attribution.modules.pattern to null for the %s preset or include them",
                    lines[0], f" (and {len(lines) - 1} more)" if len(lines) > 1 else "", model_type(model))
    return lines
