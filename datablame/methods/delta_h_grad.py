"""Loss-relevant change (seed 002, method 3): cosine of dh * g between checkpoints, plain or
integrated-gradients.

    a_l(x) = pool( dh_l(x) * g_l(x) ),   s_l[q, r] = cos( a_l(query q), a_l(row r) )

dh_l = h_l^new - h_l^old (output of decoder layer l), g_l = dL/dh_l of the new model, the
product taken per token and dimension before pooling (see `cross_checkpoint`): a_l says how
much each dimension's change moved the row's loss. With `ig_steps` K > 0 the gradient is
averaged over K points of the straight path from h_old to h_new (integrated gradients; K
forward+backward passes per layer and row batch), which makes sum(a_l) the actual loss
change of the new model's upper layers rather than a first-order estimate. Per-layer
scores are combined by `layer_aggregation`.

Unit: cosine, unitless in [-1, 1]. Sign: higher = the row's loss changed through the same
dimensions, in the same direction, as the query's = more responsible.

Options (`attribution.options.delta_h_grad`): those of `delta_h` (`old`, `new`, `layers`,
`pooling`, `span`, `aggregate`, `top_k`, `layer_weights`, `reference`) plus `ig_steps`
(0 = plain dh * g, default; e.g. 8 for the integrated-gradients variant).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from datablame.features.context import AttributionContext
from datablame.features.cross_checkpoint import cached_pair_features
from datablame.features.hidden_states import cosine_per_layer
from datablame.methods.base import register
from datablame.methods.delta_h import CrossCheckpointMethod, CrossCheckpointOptions


@register
class DeltaHGrad(CrossCheckpointMethod):
    name = "delta_h_grad"
    unit = "cosine similarity of dh * dL/dh between checkpoints (layer-aggregated), unitless in [-1, 1]"
    cost = "two forwards and one backward per row (x ig_steps backward passes per layer with IG)"

    class Options(CrossCheckpointOptions):
        ig_steps: int = Field(0, ge=0, description="0 = plain dh * g; K > 0 = integrated gradients over K points")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.ig_steps = self.options.ig_steps

    def per_layer(self, ctx: AttributionContext) -> np.ndarray:
        pair, layers = self.pair_and_layers(ctx)
        rows, queries = cached_pair_features(
            ctx, pair, layers, pooling=self.pooling, span=self.span, grads=True, ig_steps=self.ig_steps
        )
        return cosine_per_layer(queries.a, rows.a).numpy()

    def extra_info(self) -> dict:
        return {"ig_steps": self.ig_steps}

