"""Gradient alignment (seed 003): dot product or cosine of per-row loss gradients.

A row whose gradient points the same way as the query's gradient lowers the query's loss
when the model takes a gradient step on that row: one SGD step of size lr on row r changes
the query loss by about -lr * <g_q, g_r>. So `grad_dot` is the first-order decrease of the
query loss (nats) per unit learning rate, and `grad_cosine` is the same direction measure
with the magnitudes removed (unitless, in [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.methods.base import AttributionInputs, Method, register
from datablame.models.tokenize import Encoded
from datablame.store.rows import StoreRows, dot_scores
from datablame.utils.io import sha256_strings


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


def featurizer_for(inputs: AttributionInputs) -> GradientFeaturizer:
    """The featurizer of this run's model, modules and projection (built once, cached)."""
    if "grad_featurizer" not in inputs.cache:
        cfg = inputs.attribution
        modules = select_modules(inputs.model, cfg.modules)
        inputs.cache["grad_featurizer"] = GradientFeaturizer(inputs.model, modules, FactoredProjection(cfg.projection),
                                                             bias=cfg.modules.bias)
        inputs.cache["grad_modules"] = [n for n, _ in modules]
    return inputs.cache["grad_featurizer"]


def store_identity(inputs: AttributionInputs, model_fingerprint: str) -> dict:
    """What must match for stored row features to stand in for freshly computed ones."""
    cfg, mcfg = inputs.attribution, inputs.model_cfg
    return {
        "model": model_fingerprint,
        "data": inputs.corpus.fingerprint(),
        "modules": sha256_strings(f"{n}:{o}x{i}" for n, o, i in featurizer_for(inputs).shapes),
        "projection": cfg.projection.model_dump(mode="json"),
        "max_length": mcfg.max_length,
        "loss_on": mcfg.loss_on,
    }


def featurize_range(inputs: AttributionInputs, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and losses of training rows [start, stop) (for building the store)."""
    feat = featurizer_for(inputs)
    part = Encoded(inputs.rows.input_ids[start:stop], inputs.rows.labels[start:stop])
    return feat.featurize(part, inputs.attribution.batch_size, inputs.tokenizer.pad_token_id or 0, desc=False)


def gradient_features(inputs: AttributionInputs) -> GradFeatures:
    """Features of the training rows and queries; computed once per run and cached.

    With a feature store attached (`inputs.cache["feature_store"]`, opened, identity-checked
    and hash-verified by the API from `datablame index`), row features are read from it (fp16
    on disk, so scores agree with direct computation to ~1e-3 relative) and only the queries
    are featurized. The rows are then a `StoreRows`: never loaded whole, read one block at a
    time by the scoring code (`row_blocks`, `dot_scores`), so memory stays bounded by a block.
    """
    key = "grad_features"
    if key not in inputs.cache:
        cfg = inputs.attribution
        feat = featurizer_for(inputs)
        pad = inputs.tokenizer.pad_token_id or 0
        store = inputs.cache.get("feature_store")
        if store is not None:
            rows = StoreRows(store)
            row_losses = torch.as_tensor(inputs.cache.get("store_row_losses", np.full(len(rows), np.nan)), dtype=torch.float32)
        else:
            rows, row_losses = feat.featurize(inputs.rows, cfg.batch_size, pad, desc="training-row gradients")
        queries, query_losses = feat.featurize(inputs.query_rows, cfg.batch_size, pad, desc=False)
        inputs.cache[key] = GradFeatures(rows, queries, row_losses, query_losses, feat.shapes)
    return inputs.cache[key]


@register
class GradDot(Method):
    name = "grad_dot"
    family = "gradient"
    unit = "nats of query loss decrease per unit learning rate (first order)"
    cost = "one forward+backward per row (activation gradients only)"

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        g = gradient_features(inputs)
        return dot_scores(g.queries, g.rows)


@register
class GradCosine(Method):
    name = "grad_cosine"
    family = "gradient"
    unit = "cosine similarity of loss gradients, unitless in [-1, 1]"
    cost = "one forward+backward per row (activation gradients only)"

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        g = gradient_features(inputs)
        return dot_scores(g.queries, g.rows, normalize=True)
