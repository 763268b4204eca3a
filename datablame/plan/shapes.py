"""The model's shape for planning, read without allocating weights (meta device).

`model_shape` builds the configured architecture under `torch.device("meta")` (no memory, no
download: a tiny model from `model.tiny`, an HF model from its local or cached config.json, the
SmolLM2 GGUF from its converted copy's config) and reads the parameter counts, the layer sizes
and the selected modules' (in, out) dimensions with the same selection code featurizing uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from datablame.config import ModelConfig, ModuleSelection, ProjectionConfig
from datablame.errors import DatablameError


@dataclass(frozen=True)
class ModuleShape:
    name: str
    d_in: int
    d_out: int
    bias: bool


@dataclass
class ModelShape:
    """Parameter counts and sizes of one architecture (`config` is its transformers config)."""

    params: int  # every parameter
    matmul_params: int  # weights of the linear layers (lm_head included): 2 FLOPs each per token
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    modules: list[ModuleShape] = field(default_factory=list)  # the selected modules
    config: Any = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("config")
        d["modules"] = len(self.modules)
        return d


def module_feature_dims(m: ModuleShape, proj: ProjectionConfig) -> tuple[int, int]:
    """(k_out, k_in) of one module's feature block, as `FactoredProjection` + the featurizer lay
    it out: a k at least the layer's size means identity; a bias adds one input column."""
    k_in = m.d_in if proj.k_in is None or proj.k_in >= m.d_in else proj.k_in
    k_out = m.d_out if proj.k_out is None or proj.k_out >= m.d_out else proj.k_out
    return k_out, k_in + int(m.bias)


def feature_dim(modules: list[ModuleShape], proj: ProjectionConfig) -> int:
    """Floats per row in the store: sum over modules of k_out x (k_in [+1 with a bias])."""
    return sum(o * i for o, i in (module_feature_dims(m, proj) for m in modules))


def hf_config(cfg: ModelConfig, vocab_size: int | None = None) -> Any:
    """The transformers config of the configured model, without loading weights."""
    if cfg.kind == "tiny":
        from transformers import LlamaConfig

        t = cfg.tiny
        return LlamaConfig(vocab_size=vocab_size or t.vocab_size, hidden_size=t.hidden_size,
                           intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                           num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                           max_position_embeddings=t.max_position_embeddings, tie_word_embeddings=False)
    from transformers import AutoConfig

    if cfg.kind == "smollm2-gguf":
        from datablame.models.gguf import cached_model_dir

        where = cached_model_dir(cfg.cache_dir)
        key = "model.cache_dir (the converted SmolLM2 copy)"
    else:
        where, key = cfg.name_or_path, "model.name_or_path"
    try:
        return AutoConfig.from_pretrained(str(where), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise DatablameError(
            f"plan needs the model's config.json, but {key}={where} has none at hand ({str(err).splitlines()[0][:160]})",
            "point model.name_or_path at a local model directory (or one in the HF cache); for "
            "model.kind smollm2-gguf run any stage once so the converted copy exists",
        ) from None


def model_shape(cfg: ModelConfig, sel: ModuleSelection, *, vocab_size: int | None = None) -> ModelShape:
    """Counts and selected modules of the configured model, built on the meta device."""
    from transformers import AutoModelForCausalLM

    from datablame.grads.modules import linear_dims, select_modules, uses_bias
    from datablame.models.layers import is_linear

    config = hf_config(cfg, vocab_size)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if is_linear(m))
    chosen = select_modules(model, sel, warn=False) if not sel.lora_only else []
    mods = [ModuleShape(n, *linear_dims(m), uses_bias(m, sel)) for n, m in chosen]
    get = lambda *names, default=0: next((getattr(config, n) for n in names if getattr(config, n, None)), default)  # noqa: E731
    hidden = int(get("hidden_size", "n_embd", "d_model"))
    heads = int(get("num_attention_heads", "n_head"))
    return ModelShape(
        params=int(params), matmul_params=int(matmul), layers=int(get("num_hidden_layers", "n_layer")), hidden=hidden,
        intermediate=int(get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
        vocab=int(get("vocab_size")), heads=heads, kv_heads=int(get("num_key_value_heads", default=heads)),
        modules=mods, config=config,
    )
