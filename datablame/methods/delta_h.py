"""Concept-change similarity (seed 002, method 1): cosine of the hidden-state change between
an old and a new checkpoint.

    s_l[q, r] = cos( pool(dh_l(query q)), pool(dh_l(row r)) ),  dh_l = h_l^new - h_l^old

per decoder layer l, combined over layers by `layer_aggregation` (mean by default). Training
changes how the model represents inputs; a row whose representation moved the same way as
the query's is taken as one that drove that change. Unit: cosine, unitless in [-1, 1].
Sign: higher = the row's change points like the query's = more responsible. It uses no
gradients, so it cannot tell whether the change helped the query's loss.

Options (`attribution.options.delta_h`): `old` ("base" default, "first" or a path), `new`
("model" default or a path) -- see `cross_checkpoint`; `layers` ("all" default), `pooling`
mean|last, `span` answer|all, `aggregate` mean|topk|learned, `top_k`, `layer_weights`,
`reference` (learned weights, default grad_cosine).
"""

from __future__ import annotations

from abc import abstractmethod
from os import PathLike

import numpy as np
from pydantic import Field, field_validator

from datablame.features.context import AttributionContext
from datablame.features.cross_checkpoint import cached_pair_features, checkpoint_pair, n_layers_of
from datablame.features.hidden_states import cosine_per_layer, resolve_layers
from datablame.features.layer_aggregation import LayerAggregation, save_info
from datablame.methods.base import LayerOptions, Method, register, scores_of


class CrossCheckpointOptions(LayerOptions):
    """Options of the cross-checkpoint methods: the checkpoint pair, then the layer options."""

    old: str = Field("base", description="the old checkpoint: 'base' (before fine-tuning), 'first' (first saved "
                     "checkpoint) or a model directory")
    new: str = Field("model", description="the new checkpoint: 'model' (the attributed model) or a model directory")

    @field_validator("old", "new", mode="before")
    @classmethod
    def _path_as_str(cls, v: object) -> object:
        return str(v) if isinstance(v, PathLike) else v


class CrossCheckpointMethod(Method):
    """Options and checkpoint handling shared by the cross-checkpoint methods."""

    family = "representation"
    Options = CrossCheckpointOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.old, self.new, self.layers = o.old, o.new, o.layers
        self.pooling, self.span = o.pooling, o.span
        self.aggregation = LayerAggregation(o.aggregate, o.top_k, o.layer_weights, o.reference, self.name)
        self.info: dict = {}

    def pair_and_layers(self, ctx: AttributionContext):
        pair = checkpoint_pair(ctx, self.old, self.new, method=self.name)
        layers = resolve_layers(self.layers, n_layers_of(pair.new), self.name)
        return pair, layers

    def combine(self, per_layer: np.ndarray, ctx: AttributionContext, pair) -> np.ndarray:
        scores, info = self.aggregation.combine(per_layer, lambda ref: scores_of(ctx, ref, by=self.name))
        self.info = {**info, "old": pair.old_source, "new": pair.new_source, "pooling": self.pooling, "span": self.span}
        return scores

    def score(self, ctx: AttributionContext) -> np.ndarray:
        pair, _ = self.pair_and_layers(ctx)
        scores = self.combine(self.per_layer(ctx), ctx, pair)
        self.info.update(self.extra_info())
        save_info(ctx, self.name, self.info)
        return scores

    def extra_info(self) -> dict:
        return {}

    @abstractmethod
    def per_layer(self, ctx: AttributionContext) -> np.ndarray:
        """Scores per selected layer [layers, queries, rows] (combined by `combine`)."""


@register
class DeltaH(CrossCheckpointMethod):
    name = "delta_h"
    unit = "cosine similarity of hidden-state changes h_new - h_old (layer-aggregated), unitless in [-1, 1]"
    cost = "one forward per row with each of two checkpoints (no backward)"

    def per_layer(self, ctx: AttributionContext) -> np.ndarray:
        pair, layers = self.pair_and_layers(ctx)
        rows, queries = cached_pair_features(ctx, pair, layers, pooling=self.pooling, span=self.span, grads=False)
        return cosine_per_layer(queries.dh, rows.dh).numpy()
