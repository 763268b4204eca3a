"""Gated cross-checkpoint causal patching (seed 002, method 4).

For a query q, a training row r and a decoder layer l:

1. gate(r, l): the `top_p` percent of hidden dimensions with the most negative a_l(r), where
   a_l(r) = pool(dh_l(r) * g_l(r)) is the row's loss-relevant change between the old and
   the new checkpoint (`cross_checkpoint`; `ig_steps` > 0 uses the integrated-gradients
   version): the dimensions whose change lowered the row's own loss most (first order).
   Gating on |a| instead also picks dimensions whose change *raised* the row's loss; on the
   demo that made the scores no better than chance;
2. run the *old* model on the query with layer l's output replaced, at every position, by
   h_old + gate * (h_new - h_old): the gated dimensions take the new model's values (the
   query's own h_new), the others keep the old ones;
3. score_l[q, r] = m_patched - m_old, where m is the query's target margin: the mean over
   its completion tokens of logit(target) - max logit(any other token), in logits.

So a row scores high when the dimensions that carried its own training change are the ones
that, moved to their trained values, make the old model produce the query's output: it
names the rows whose learned change is causally sufficient for the query. Per-layer scores
are combined by `layer_aggregation` (mean by default). Unit: logits of target margin
(layer-aggregated). Sign: higher = patching the row's dimensions raises the query's target
margin (lowers its loss) = more responsible; negative = those dimensions work against it.

Batched: the layers below l run once per query (batch 1); the patched state is expanded to
one sequence per row gate and only layers above l run per row, with logits computed for
the completion positions only (`patch_batch` gates per forward). Exact cost per query and
layer: R sequences through the layers above l. `mode: additive` instead patches each
dimension alone (d sequences per query and layer, independent of R) and scores a row by the
sum of its gated dimensions' single effects -- ignoring interactions, for large corpora.

Options (`attribution.options.causal_patching`): `top_p` (percent of dimensions, default
25), `mode` exact|additive, `ig_steps` (gate from IG attributions, default 0), `patch_batch`
(256), plus those of `delta_h` (`old`, `new`, `layers` default "all", `pooling`, `span`,
`aggregate`, `top_k`, `layer_weights`, `reference`).
"""

from __future__ import annotations

import inspect
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.cross_checkpoint import cached_pair_features
from datablame.features.hidden_states import device_of, forward_layers, layer_hooks
from datablame.methods.base import register
from datablame.methods.delta_h import CrossCheckpointMethod, CrossCheckpointOptions
from datablame.models.tokenize import IGNORE, pad_batch

MODES = ("exact", "additive")
DIRECTIONS = ("old_to_new", "new_to_old")


def target_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, n, V] logits at n answer positions, [n] target ids -> [B] mean margin (logits)."""
    logits = logits.float()
    tgt = logits.gather(-1, targets.expand(len(logits), -1)[..., None]).squeeze(-1)
    others = logits.scatter(-1, targets.expand(len(logits), -1)[..., None], float("-inf"))
    return (tgt - others.max(dim=-1).values).mean(dim=-1)


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _QueryPatcher:
    """The old model on one query; margins with gated dimensions of one layer patched."""

    def __init__(self, old: torch.nn.Module, ids: list[int], labels: list[int], pad_id: int) -> None:
        self.old = old
        batch = pad_batch([ids], [labels], pad_id)
        self.batch = {k: v.to(device_of(old)) for k, v in batch.items()}
        lab = self.batch["labels"][0]
        pred = (lab[1:] != IGNORE).nonzero().flatten()  # positions predicting a loss token
        if len(pred) == 0:
            raise DatablameError("causal_patching: a query has no completion token to measure",
                                 "give every query a non-empty completion")
        self.first = int(pred[0])
        self.positions = pred - self.first
        self.targets = lab[1:][pred]
        self.keep = len(lab) - self.first
        self.use_keep = _accepts_logits_to_keep(old)
        self.expand = True  # layers above the patch see a batch of gates, lower ones batch 1

    @torch.no_grad()
    def margins(self, layer: int | None, h_new: torch.Tensor | None, gates: torch.Tensor | None) -> torch.Tensor:
        """[B] margins with layer `layer` patched by each row of `gates` [B, d] (None: unpatched)."""
        n = 1 if gates is None else len(gates)
        try:
            return self._run(layer, h_new, gates, n, expand=self.expand)
        except RuntimeError:
            if not self.expand:
                raise
            self.expand = False  # an architecture that cannot broadcast batch 1: repeat the query
            return self._run(layer, h_new, gates, n, expand=False)

    def _run(self, layer, h_new, gates, n, *, expand: bool) -> torch.Tensor:
        reps = 1 if expand else n
        batch = {k: v.expand(reps, -1) for k, v in self.batch.items()}

        def edit(_layer: int, h: torch.Tensor) -> torch.Tensor | None:
            if gates is None:
                return None
            return h + gates.to(h.dtype)[:, None, :] * (h_new.to(h.dtype) - h)

        kwargs = {"logits_to_keep": self.keep} if self.use_keep else {}
        with layer_hooks(self.old, [] if layer is None else [layer], edit):
            logits = self.old(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs).logits
        if logits.shape[0] != n:
            raise RuntimeError("batch did not broadcast")
        logits = logits[:, -self.keep:] if self.use_keep else logits[:, self.first:]
        return target_margin(logits[:, self.positions], self.targets)


def top_p_gates(a: torch.Tensor, top_p: float) -> torch.Tensor:
    """[R, d] attributions a = dh * dL/dh -> [R, d] 0/1 gates: per row, the ceil(top_p% * d)
    dimensions with the most negative a (whose change lowered the row's loss most); dimensions
    whose change did not lower it (a >= 0) are never gated, so a row may get fewer."""
    d = a.shape[1]
    k = max(1, math.ceil(top_p / 100.0 * d))
    helped = (-a).clamp_min(0.0)
    top = helped.topk(k, dim=1)
    gates = torch.zeros_like(a, dtype=torch.float32).scatter_(1, top.indices, 1.0)
    return gates * (helped > 0)


@register
class CausalPatching(CrossCheckpointMethod):
    name = "causal_patching"
    family = "counterfactual"
    unit = "logits of the query's target margin gained by patching the row's top-p% changed dims (layer-aggregated)"
    cost = "two forwards + one backward per row, then per query and layer R (exact) or d (additive) partial forwards"

    class Options(CrossCheckpointOptions):
        top_p: float = Field(25.0, gt=0, le=100, description="percent of hidden dimensions gated per row and layer")
        mode: Literal[MODES] = Field("exact", description="exact: patch each row's gate; additive: sum of "
                                     "single-dimension effects (for large corpora)")
        direction: Literal[DIRECTIONS] = Field("old_to_new", description="patch new values into the old model, "
                                               "or old values into the new one")
        ig_steps: int = Field(0, ge=0, description="gate from integrated-gradients attributions with K steps (0 = dh * g)")
        patch_batch: int = Field(256, ge=1, description="gates per patched forward")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.direction, self.top_p, self.mode, self.ig_steps, self.patch_batch = (
            o.direction, o.top_p, o.mode, o.ig_steps, o.patch_batch)

    def per_layer(self, ctx: AttributionContext) -> np.ndarray:
        """[L, Q, R] margin gains."""
        pair, layers = self.pair_and_layers(ctx)
        rows, _ = cached_pair_features(
            ctx, pair, layers, pooling=self.pooling, span=self.span, grads=True, ig_steps=self.ig_steps
        )
        pad = ctx.tokenizer.pad_token_id or 0
        n_q, n_r = len(ctx.query_rows), len(ctx.rows)
        out = np.zeros((len(layers), n_q, n_r), dtype=np.float64)
        old_mode, new_mode = pair.old.training, pair.new.training
        pair.old.eval()
        pair.new.eval()
        try:
            work = [(qi, j) for qi in range(n_q) for j in range(len(layers))]
            bar = tqdm(total=len(work), desc="causal patching (query x layer)", disable=len(work) < 8, leave=False)
            for qi in range(n_q):
                ids, labels = ctx.query_rows.input_ids[qi], ctx.query_rows.labels[qi]
                forward = self.direction == "old_to_new"
                run_model, source = (pair.old, pair.new) if forward else (pair.new, pair.old)
                patcher = _QueryPatcher(run_model, ids, labels, pad)
                batch = {k: v.to(device_of(pair.new)) for k, v in pad_batch([ids], [labels], pad).items()}
                h_src = forward_layers(source, batch, layers)[0]
                base = float(patcher.margins(None, None, None)[0])
                sign = 1.0 if forward else -1.0
                for j, layer in enumerate(layers):
                    gates = top_p_gates(rows.a[:, j], self.top_p)
                    if self.mode == "additive":
                        eye = torch.eye(gates.shape[1])
                        effect = sign * (self._margins(patcher, layer, h_src[j], eye) - base)
                        out[j, qi] = (gates.double() @ effect.double()).numpy()
                    else:
                        out[j, qi] = (sign * (self._margins(patcher, layer, h_src[j], gates) - base)).numpy()
                    bar.update()
            bar.close()
        finally:
            pair.old.train(old_mode)
            pair.new.train(new_mode)
        return out

    def _margins(self, patcher: _QueryPatcher, layer: int, h_new: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        parts = [
            patcher.margins(layer, h_new, gates[s : s + self.patch_batch].to(device_of(patcher.old))).cpu()
            for s in range(0, len(gates), self.patch_batch)
        ]
        return torch.cat(parts).double()

    def extra_info(self) -> dict:
        return {"top_p": self.top_p, "mode": self.mode, "direction": self.direction, "ig_steps": self.ig_steps}
