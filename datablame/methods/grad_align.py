"""Gradient alignment (seed 003): dot product or cosine of per-row loss gradients.

A row whose gradient points the same way as the query's gradient lowers the query's loss
when the model takes a gradient step on that row: one SGD step of size lr on row r changes
the query loss by about -lr * <g_q, g_r>. So `grad_dot` is the first-order decrease of the
query loss (nats) per unit learning rate, and `grad_cosine` is the same direction measure
with the magnitudes removed (unitless, in [-1, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.methods.base import AttributionInputs, Method, register


def gradient_features(inputs: AttributionInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(row features [R, D], query features [Q, D]); cached so dot and cosine share them."""
    key = "grad_features"
    if key not in inputs.cache:
        cfg = inputs.attribution
        modules = select_modules(inputs.model, cfg.modules)
        feat = GradientFeaturizer(inputs.model, modules, FactoredProjection(cfg.projection))
        pad = inputs.tokenizer.pad_token_id or 0
        rows, _ = feat.featurize(inputs.rows, cfg.batch_size, pad, desc="training-row gradients")
        queries, _ = feat.featurize(inputs.query_rows, cfg.batch_size, pad, desc=False)
        inputs.cache[key] = (rows, queries)
        inputs.cache["grad_modules"] = [n for n, _ in modules]
    return inputs.cache[key]


@register
class GradDot(Method):
    name = "grad_dot"
    unit = "nats of query loss decrease per unit learning rate (first order)"
    cost = "one forward+backward per row (activation gradients only)"

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        rows, queries = gradient_features(inputs)
        return (queries.double() @ rows.double().T).numpy()


@register
class GradCosine(Method):
    name = "grad_cosine"
    unit = "cosine similarity of loss gradients, unitless in [-1, 1]"
    cost = "one forward+backward per row (activation gradients only)"

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        rows, queries = gradient_features(inputs)
        r = torch.nn.functional.normalize(rows.double(), dim=1)
        q = torch.nn.functional.normalize(queries.double(), dim=1)
        return (q @ r.T).numpy()
