"""Influence functions with K-FAC fitted in the projected gradient space.

score[q, r] = g_qᵀ (T̄ · S ⊗ A + λI)⁻¹ g_r: A, S the per-token covariances of projected
activations and output gradients, T̄ the mean real tokens per row (`datablame.curvature.kfac`).
Like `ekfac` without the eigenvalue correction; the ablation that shows what the correction buys.

Sign: higher = up-weighting (training on) the row lowers the query's loss. Unit: nats of
query-loss decrease per unit extra weight on the row in the mean training objective; removing
the row raises the query loss by about score / n_rows. Options as `ekfac` (damping null =
0.1 x mean eigenvalue per module).

`ProjectedInfluence`, defined here, is the base of `kfac`, `ekfac` and `diag_influence`: it
fits (or reloads) a preconditioner from `datablame.features.preconditioner` and scores
g_qᵀ (F + λI)⁻¹ g_r, or with `normalize: true` the cosine of the two gradients in that metric.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, StrictBool

from datablame.curvature import HEURISTIC_DAMPING_SCALE, Preconditioner
from datablame.features.context import AttributionContext
from datablame.features.gradients import gradient_features
from datablame.features.preconditioner import fit_preconditioner
from datablame.methods.base import Method, MethodOptions, register
from datablame.store.rows import StoreRows, block_rows_for

NORMALIZED_UNIT = ("relative influence (normalize: true): cosine of the query and row gradients in the "
                   "(F + λI)⁻¹ metric, unitless in [-1, 1]")


class ProjectedInfluence(Method):
    """Base of the influence methods that precondition projected gradient features."""

    kind: ClassVar[str]
    family = "influence"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = ("nats of query-loss decrease per unit extra weight on the row in the mean training "
            "objective (removing the row raises the query loss by ~score / n_rows)")

    class Options(MethodOptions):
        damping: float | None = Field(None, ge=0, description="absolute damping λ in Fisher units (null = "
                                      "damping_scale x mean eigenvalue per module)")
        damping_scale: float = Field(HEURISTIC_DAMPING_SCALE, gt=0, description="heuristic damping when damping is null")
        fisher: Literal["empirical", "true"] = Field("empirical", description="empirical: the rows' own labels; "
                                                     "true: labels sampled from the model")
        fit_rows: int | None = Field(None, ge=1, description="rows that fit the curvature (null = all; else a seeded sample)")
        seed: int = Field(0, description="seed of the fitting sample and of sampled labels")
        reuse: StrictBool = Field(True, description="reuse saved factors when their identity matches")
        normalize: StrictBool = Field(False, description="relative influence: cosine in the (F + λI)⁻¹ metric, "
                                      "unitless in [-1, 1]")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.damping, self.damping_scale = o.damping, o.damping_scale
        self.fisher, self.fit_rows, self.seed, self.reuse = o.fisher, o.fit_rows, o.seed, o.reuse
        self.normalize = o.normalize
        self.preconditioner: Preconditioner | None = None

    def fit(self, ctx: AttributionContext) -> None:
        self.preconditioner = fit_preconditioner(
            ctx, self.kind, fisher=self.fisher, fit_rows=self.fit_rows, seed=self.seed, reuse=self.reuse
        )

    def score(self, ctx: AttributionContext) -> np.ndarray:
        if self.preconditioner is None:
            self.fit(ctx)
        g = gradient_features(ctx)
        pre = self.preconditioner
        # rows are read one block at a time (a feature store's rows are never loaded whole)
        block = block_rows_for(g.queries.shape[1]) if not isinstance(g.rows, StoreRows) else g.rows.block_rows
        scores = pre.scores(g.queries, g.rows, self.damping, self.damping_scale, chunk=block)
        if self.normalize:  # relative influence: rows with large gradients no longer win every query
            q_self = pre.self_influence(g.queries, self.damping, self.damping_scale)
            r_self = pre.self_influence(g.rows, self.damping, self.damping_scale, chunk=block)
            scores /= q_self.clamp_min(1e-300).sqrt()[:, None] * r_self.clamp_min(1e-300).sqrt()[None, :]
        return scores.numpy()

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d["damping"] = f"heuristic: {self.damping_scale:g} x mean eigenvalue per module" if self.damping is None else str(self.damping)
        d["fisher"] = self.fisher
        if self.normalize:
            d["unit"] = NORMALIZED_UNIT
        d["normalize"] = str(self.normalize).lower()
        return d


@register
class KfacInfluence(ProjectedInfluence):
    name = "kfac"
    kind = "kfac"
    cost = "one forward+backward per row (covariances and row gradients in one pass), k x k eigendecompositions"
