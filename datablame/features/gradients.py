"""Projected loss-gradient features of the training rows and queries at the attributed model.

The shared input of the gradient and influence methods (`grad_dot`, `grad_cosine`, `ekfac`,
`trak`, ...): computed once per run (or read from the run's feature store) and kept on the
attribution context. Gradient alignment, their simplest use (seed 003):

A row whose gradient points the same way as the query's gradient lowers the query's loss
when the model takes a gradient step on that row: one SGD step of size lr on row r changes
the query loss by about -lr * <g_q, g_r>. So `grad_dot` is the first-order decrease of the
query loss (nats) per unit learning rate, and `grad_cosine` is the same direction measure
with the magnitudes removed (unitless, in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from datablame.features.context import AttributionContext
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.models.tokenize import Encoded
from datablame.store.rows import StoreRows


@dataclass
class GradFeatures:
    """Projected per-row loss gradients of the attributed model, shared by gradient methods.

    `rows[r]` / `queries[q]` concatenate, module by module in `shapes` order, the row-major
    `k_out x k_in` block sum_t (P_out g_t)(P_in a_t)^T: the gradient of the mean
    completion-token NLL (nats) w.r.t. that layer's weight, projected.
    """

    rows: torch.Tensor | StoreRows  # [R, D] float32 (StoreRows: read block by block from a feature store)
    queries: torch.Tensor  # [Q, D] float32
    row_losses: torch.Tensor  # [R]
    query_losses: torch.Tensor  # [Q]
    shapes: list[tuple[str, int, int]]  # (module name, k_out, k_in)

    def blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Split features [N, D] into per-module views [N, k_out, k_in]."""
        out, start = [], 0
        for _, o, i in self.shapes:
            out.append(x[:, start : start + o * i].reshape(len(x), o, i))
            start += o * i
        return out


def measure_queries(
    ctx: AttributionContext, featurize: Callable[[Encoded], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query features [Q, D] and losses [Q], through `featurize` (any featurizer of encoded
    rows: the attributed model's, a checkpoint's, a token-wise one's): each query's own string,
    or, for behaviour-level queries, the weighted sum over their member completions
    (`ctx.query_measure`: mean of the behaviour minus mean of the contrast). Exact, because a
    projected gradient is linear in the gradient. The one place every gradient and influence
    method measures its queries."""
    measure = ctx.query_measure
    if measure is None:
        return featurize(ctx.query_rows)
    feats, losses = featurize(measure.rows)
    weights = measure.weights.to(feats.dtype)
    return weights @ feats, (measure.weights @ losses.double()).to(losses.dtype)


def featurizer_for(ctx: AttributionContext) -> GradientFeaturizer:
    """The featurizer of this run's model, modules and projection (built once, cached)."""
    if ctx.shared.featurizer is None:
        cfg = ctx.attribution
        modules = select_modules(ctx.model, cfg.modules)
        autocast = None if cfg.featurize_dtype == "model" else getattr(torch, cfg.featurize_dtype)
        ctx.shared.featurizer = GradientFeaturizer(ctx.model, modules, FactoredProjection(cfg.projection),
                                                   bias=cfg.modules.bias, autocast=autocast,
                                                   checkpointing=ctx.model_cfg.gradient_checkpointing)
        ctx.shared.grad_modules = [n for n, _ in modules]
    return ctx.shared.featurizer


def featurize_range(ctx: AttributionContext, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and losses of training rows [start, stop) (for building the store)."""
    feat = featurizer_for(ctx)
    part = Encoded(ctx.rows.input_ids[start:stop], ctx.rows.labels[start:stop])
    return feat.featurize(part, ctx.attribution.batch_size, ctx.tokenizer.pad_token_id or 0, desc=False)


def gradient_features(ctx: AttributionContext) -> GradFeatures:
    """Features of the training rows and queries; computed once per run and cached.

    With a feature store attached (`ctx.store`, opened, identity-checked
    and hash-verified by the API from `datablame index`), row features are read from it (fp16
    on disk, so scores agree with direct computation to ~1e-3 relative) and only the queries
    are featurized. The rows are then a `StoreRows`: never loaded whole, read one block at a
    time by the scoring code (`row_blocks`, `dot_scores`), so memory stays bounded by a block.
    """
    if ctx.shared.grads is None:
        cfg = ctx.attribution
        feat = featurizer_for(ctx)
        pad = ctx.tokenizer.pad_token_id or 0
        if ctx.store is not None:
            rows = StoreRows(ctx.store)
            losses = ctx.store_row_losses if ctx.store_row_losses is not None else np.full(len(rows), np.nan)
            row_losses = torch.as_tensor(losses, dtype=torch.float32)
        elif ctx.shared.row_grads is not None:  # the same rows, featurized for earlier queries
            rows, row_losses = ctx.shared.row_grads
        else:
            rows, row_losses = feat.featurize(ctx.rows, cfg.batch_size, pad, desc="training-row gradients")
            ctx.shared.row_grads = (rows, row_losses)
        queries, query_losses = measure_queries(ctx, lambda enc: feat.featurize(enc, cfg.batch_size, pad, desc=False))
        ctx.shared.grads = GradFeatures(rows, queries, row_losses, query_losses, feat.shapes)
    return ctx.shared.grads
