"""Activation-gradient similarity (seed 002, method 2): cosine of pooled dL/dh at decoder layers.

    s_l[q, r] = cos( pool(g_l(query q)), pool(g_l(row r)) ),   g_l(x) = dL(x)/dh_l(x)

on the attributed model, where L is the row's mean completion-token NLL (the training loss)
and h_l the output of decoder layer l; the per-layer scores are combined by
`layer_aggregation` (mean by default). It swaps the parameter gradients of gradient
alignment for activation gradients: the gradient of any weight that reads h_l is
sum_t g_t a_t^T, so rows whose activation gradients point the same way push those weights
the same way. Unit: cosine, unitless in [-1, 1]. Sign: higher = a step on the row moves the
representation the way that lowers the query's loss (first-order analogy of grad_cosine),
i.e. more responsible.

Options (`attribution.options.activation_gradient`): `layers` ("all" default, an int, a
list or "1-3"), `pooling` mean|last, `span` answer|all (see `hidden_states`), `aggregate`
mean|topk|learned, `top_k` (topk), `layer_weights` (fixed convex weights), `reference`
(method whose scores teach the learned weights, default grad_cosine).
"""

from __future__ import annotations

import numpy as np

from datablame.features.context import AttributionContext
from datablame.features.hidden_states import (
    attributed_layer_features,
    cosine_per_layer,
    decoder_layers,
    resolve_layers,
)
from datablame.features.layer_aggregation import LayerAggregation, save_info
from datablame.methods.base import LayerOptions, Method, register, scores_of


@register
class ActivationGradient(Method):
    name = "activation_gradient"
    family = "representation"
    unit = "cosine similarity of pooled activation gradients dL/dh (layer-aggregated), unitless in [-1, 1]"
    cost = "one forward+backward per row (activation gradients only, no weight gradients)"

    Options = LayerOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.layers, self.pooling, self.span = o.layers, o.pooling, o.span
        self.aggregation = LayerAggregation(o.aggregate, o.top_k, o.layer_weights, o.reference, self.name)
        self.info: dict = {}

    def per_layer(self, ctx: AttributionContext) -> np.ndarray:
        """[L, Q, R] cosine per selected layer."""
        layers = resolve_layers(self.layers, len(decoder_layers(ctx.model)), self.name)
        rows, queries = attributed_layer_features(ctx, layers, pooling=self.pooling, span=self.span, grads=True)
        return cosine_per_layer(queries.g, rows.g).numpy()

    def score(self, ctx: AttributionContext) -> np.ndarray:
        scores, info = self.aggregation.combine(self.per_layer(ctx), lambda ref: scores_of(ctx, ref, by=self.name))
        self.info = {**info, "pooling": self.pooling, "span": self.span}
        save_info(ctx, self.name, self.info)
        return scores
