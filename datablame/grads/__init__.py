"""Per-example gradient features via hooks, with factored random projection (LoGra-style)."""

from datablame.grads.featurizer import GradientFeaturizer, featurize_rows
from datablame.grads.modules import select_modules
from datablame.grads.projection import FactoredProjection

__all__ = ["GradientFeaturizer", "FactoredProjection", "featurize_rows", "select_modules"]
