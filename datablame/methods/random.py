"""Random baseline: every (query, row) pair gets independent uniform noise.

The floor every method must beat: its expected recall@k is k / n_rows. Seeded
(`attribution.options.random.seed`), so a run is reproducible, and a different seed gives a
different ranking.

Sign: none -- higher means nothing; the scores carry no information about the rows.
Unit: uniform noise in [0, 1).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from datablame.features.context import AttributionContext
from datablame.methods.base import Method, MethodOptions, register


@register
class RandomBaseline(Method):
    name = "random"
    family = "baseline"
    sign = "none: uniform noise, higher means nothing (the chance floor)"
    unit = "uniform noise in [0, 1)"
    cost = "none"

    class Options(MethodOptions):
        seed: int = Field(0, description="seed of the noise (another seed, another ranking)")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.seed = self.options.seed

    def score(self, ctx: AttributionContext) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.random((len(ctx.queries), len(ctx.corpus)), dtype=np.float64)
