"""Random baseline: every (query, row) pair gets independent uniform noise.

The floor every method must beat: its expected recall@k is k / n_rows. Seeded
(`attribution.options.random.seed`), so a run is reproducible, and a different seed gives a
different ranking.

Sign: none -- higher means nothing; the scores carry no information about the rows.
Unit: uniform noise in [0, 1).
"""

from __future__ import annotations

import numpy as np

from datablame.methods.base import AttributionInputs, Method, register


@register
class RandomBaseline(Method):
    name = "random"
    sign = "none: uniform noise, higher means nothing (the chance floor)"
    unit = "uniform noise in [0, 1)"
    cost = "none"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.random((len(inputs.queries), len(inputs.corpus)), dtype=np.float64)
