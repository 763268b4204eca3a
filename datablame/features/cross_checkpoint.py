"""Two checkpoints of one model ("old" before, "new" after training) and what changed between
them, per row (seed 002). Shared by `delta_h`, `delta_h_grad` and `causal_patching`.

Which checkpoints (method options `old`, `new`):
- old: "base" (default): the model before fine-tuning (`ctx.base_model`, saved for tiny
  models under <run>/model/base), else the run's first Trainer checkpoint; "first": the first
  checkpoint; or a path to a saved model / checkpoint / adapter directory.
- new: "model" (default): the attributed model (`ctx.model`); or a path.
Both must share the architecture and the tokenizer (rows are encoded once, with the run's
tokenizer): anything else is refused with a DatablameError, as is a pair with equal weights.

Per row x and layer l (token-level, then pooled as in `hidden_states`):
- dh_l(x) = h_l^new(x) - h_l^old(x);
- a_l(x)  = dh_l(x) * g_l(x), elementwise, with g_l = dL/dh_l at the new model. Summed over
  tokens and dimensions it is the first-order change of the loss carried by layer l's
  representation (negative = the change lowered the row's loss); per dimension it says
  which directions of the change mattered for the loss.
- integrated-gradients variant (`ig_steps` K > 0): g_l is replaced by the mean of the new
  model's gradients along the straight path h_old + alpha * dh, alpha = (k + 1/2) / K
  (midpoint Riemann sum), substituting the path for layer l's output and running the new
  model's later layers. Then sum(a_l) ~= L_new(h_new) - L_new(h_old) exactly up to the
  Riemann error (completeness), instead of only to first order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.hidden_states import (
    batches,
    decoder_layers,
    device_of,
    forward_layers,
    pool,
    span_mask,
)
from datablame.models.tokenize import Encoded

log = logging.getLogger("datablame")

_ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size")


@dataclass
class CheckpointPair:
    old: nn.Module
    new: nn.Module
    old_source: str
    new_source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.old_source, self.new_source)


def _config_of(model: nn.Module) -> dict:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    d = cfg.to_dict() if cfg is not None else {}
    out = {k: d.get(k) for k in _ARCH_KEYS}
    out["embedding_rows"] = base.get_input_embeddings().weight.shape[0] if hasattr(base, "get_input_embeddings") else None
    return out


def check_same_architecture(old: nn.Module, new: nn.Module, old_name: str, new_name: str, method: str) -> None:
    a, b = _config_of(old), _config_of(new)
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        shown = ", ".join(f"{k}: {x} vs {y}" for k, (x, y) in list(diff.items())[:4])
        raise DatablameError(
            f"{method}: the old checkpoint {old_name} and the new model {new_name} have different architectures ({shown})",
            f"set attribution.options.{method}.old to a checkpoint of the same model (e.g. the run's model/base)",
        )


def check_same_tokenizer(tok_a, tok_b, a_name: str, b_name: str, method: str) -> None:
    same = tok_a.get_vocab() == tok_b.get_vocab() and all(
        getattr(tok_a, t) == getattr(tok_b, t) for t in ("bos_token_id", "eos_token_id")
    )
    if not same:
        raise DatablameError(
            f"{method}: {a_name} and {b_name} use different tokenizers (vocabularies or special tokens differ)",
            "cross-checkpoint methods need two checkpoints of the same model and tokenizer; "
            f"set attribution.options.{method}.old/new accordingly",
        )


def _resolve_path(ctx: AttributionContext, spec: str, method: str) -> Path:
    if spec == "base":
        if ctx.base_model is not None:
            return Path(ctx.base_model)
        if ctx.checkpoints:
            log.info("%s: no saved base model; using the first checkpoint %s as 'old'", method, ctx.checkpoints[0])
            return Path(ctx.checkpoints[0])
        raise DatablameError(
            f"{method}: this run has no model before training (model/base) and no checkpoints",
            f"set attribution.options.{method}.old to the directory of the model before fine-tuning",
        )
    if spec == "first":
        if not ctx.checkpoints:
            raise DatablameError(f"{method}: old='first' but the run has no checkpoints",
                                 f"use old: base or a path in attribution.options.{method}.old")
        return Path(ctx.checkpoints[0])
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise DatablameError(f"{method}: checkpoint directory {spec} does not exist",
                             f"fix attribution.options.{method}.old / new")
    return path


def _load(ctx: AttributionContext, path: Path) -> tuple[nn.Module, object, str]:
    key = str(path.resolve())
    if key not in ctx.shared.checkpoint_models:
        from datablame.models import load_model

        loaded = load_model(ctx.model_cfg, path_override=str(path))
        loaded.model.eval()
        ctx.shared.checkpoint_models[key] = (loaded.model, loaded.tokenizer, loaded.fingerprint)
    return ctx.shared.checkpoint_models[key]


def checkpoint_pair(ctx: AttributionContext, old: str = "base", new: str = "model", *, method: str) -> CheckpointPair:
    """The (old, new) models, loaded once per run and checked to be comparable."""
    old_path = _resolve_path(ctx, old, method)
    old_model, old_tok, old_fp = _load(ctx, old_path)
    if new == "model":
        new_model, new_tok = ctx.model, ctx.tokenizer
        new_fp = ctx.fingerprint
        new_source = "attributed model"
    else:
        new_path = _resolve_path(ctx, new, method)
        new_model, new_tok, new_fp = _load(ctx, new_path)
        new_source = str(new_path)
        check_same_tokenizer(new_tok, ctx.tokenizer, new_source, "the run's tokenizer", method)
    check_same_tokenizer(old_tok, new_tok, str(old_path), new_source, method)
    check_same_architecture(old_model, new_model, str(old_path), new_source, method)
    if new_fp is None:
        from datablame.models import model_fingerprint

        new_fp = model_fingerprint(new_model)
    if old_fp == new_fp:
        raise DatablameError(
            f"{method}: the old checkpoint {old_path} has the same weights as the new model, so nothing changed",
            f"set attribution.options.{method}.old to a model from before training",
        )
    old_model.to(device_of(new_model))
    return CheckpointPair(old_model, new_model, str(old_path), new_source)


@dataclass
class PairFeatures:
    """Pooled per-row change vectors at `layers`: dh [N, L, d]; a [N, L, d] (None without
    gradients); losses of both models [N] (nats per loss token)."""

    layers: list[int]
    dh: torch.Tensor
    a: torch.Tensor | None
    loss_old: torch.Tensor
    loss_new: torch.Tensor


def pair_features(
    pair: CheckpointPair, encoded: Encoded, layers: Sequence[int], *, pad_id: int, batch_size: int,
    pooling: str, span: str, grads: bool, ig_steps: int = 0, desc: str | bool = False,
) -> PairFeatures:
    """dh (and a = dh * g, or its integrated-gradients version) pooled per row."""
    old, new = pair.old, pair.new
    modes = (old.training, new.training)
    old.eval()
    new.eval()
    layers = list(layers)
    dhs, as_, lo, ln = [], [], [], []
    n_batches = (len(encoded) + batch_size - 1) // batch_size
    try:
        it = batches(encoded, batch_size, pad_id, device_of(new))
        for _, batch in tqdm(it, total=n_batches, desc=desc or "", disable=not desc or n_batches < 4, leave=False):
            h_old, _, loss_old = forward_layers(old, batch, layers)
            h_new, g_new, loss_new = forward_layers(new, batch, layers, grads=grads)
            mask = span_mask(batch["labels"], batch["attention_mask"], span)
            dh = [hn - ho for hn, ho in zip(h_new, h_old, strict=True)]
            dhs.append(torch.stack([pool(x, mask, pooling) for x in dh], dim=1).cpu())
            if grads:
                if ig_steps > 0:
                    g_new = [_path_gradient(new, batch, layer, ho, d, ig_steps) for layer, ho, d in zip(layers, h_old, dh, strict=True)]
                a = [d * g for d, g in zip(dh, g_new, strict=True)]
                as_.append(torch.stack([pool(x, mask, pooling) for x in a], dim=1).cpu())
            lo.append(loss_old.cpu())
            ln.append(loss_new.cpu())
    finally:
        old.train(modes[0])
        new.train(modes[1])
    return PairFeatures(layers, torch.cat(dhs), torch.cat(as_) if grads else None, torch.cat(lo), torch.cat(ln))


def _path_gradient(model: nn.Module, batch: dict, layer: int, h_old: torch.Tensor, dh: torch.Tensor, steps: int) -> torch.Tensor:
    """Mean dL/dh_l of the new model along h_old + alpha * dh (midpoint rule, `steps` points)."""
    total = torch.zeros_like(dh)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        path = (h_old + alpha * dh).requires_grad_(True)
        _, g, _ = forward_layers(model, batch, [layer], grads=True, replace={layer: path})
        total += g[0]
    return total / steps


def cached_pair_features(
    ctx: AttributionContext, pair: CheckpointPair, layers: Sequence[int], *, pooling: str, span: str,
    grads: bool, ig_steps: int = 0,
) -> tuple[PairFeatures, PairFeatures]:
    """(rows, queries) pair features, computed once per run, pair and setting. A request
    without gradients reuses features computed with them."""
    base = (pair.key, tuple(layers), pooling, span)
    for key in [(*base, True, ig_steps), (*base, True, 0), (*base, False, 0)] if not grads else [(*base, True, ig_steps)]:
        if key in ctx.shared.pair_features:
            return ctx.shared.pair_features[key]
    pad = ctx.tokenizer.pad_token_id or 0
    bs = ctx.attribution.batch_size
    what = "checkpoint change" + (f" x gradient (IG, {ig_steps} steps)" if ig_steps else " x gradient" if grads else "")
    kw = dict(pad_id=pad, batch_size=bs, pooling=pooling, span=span, grads=grads, ig_steps=ig_steps)
    rows = pair_features(pair, ctx.rows, layers, desc=f"training-row {what}", **kw)
    queries = pair_features(pair, ctx.query_rows, layers, **kw)
    ctx.shared.pair_features[(*base, grads, ig_steps if grads else 0)] = (rows, queries)
    return rows, queries


def n_layers_of(model: nn.Module) -> int:
    return len(decoder_layers(model))
