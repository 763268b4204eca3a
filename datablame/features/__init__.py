"""What attribution methods share, computed once per run: the `AttributionContext` and its
features (gradient features at the model and at each checkpoint, hidden states, checkpoint
pairs, text indices, preconditioners, layer aggregation). Below `methods` in the layering:
nothing here imports a method or the registry (docs/architecture.md)."""

from datablame.features.context import (
    AttributionContext,
    FeatureIdentity,
    ModelInfo,
    SharedFeatures,
)

__all__ = ["AttributionContext", "FeatureIdentity", "ModelInfo", "SharedFeatures"]
