"""Influence functions with K-FAC fitted in the projected gradient space.

score[q, r] = g_qᵀ (T̄ · S ⊗ A + λI)⁻¹ g_r: A, S the per-token covariances of projected
activations and output gradients, T̄ the mean real tokens per row (`datablame.curvature.kfac`).
Like `ekfac` without the eigenvalue correction; the ablation that shows what the correction buys.

Sign: higher = up-weighting (training on) the row lowers the query's loss. Unit: nats of
query-loss decrease per unit extra weight on the row in the mean training objective; removing
the row raises the query loss by about score / n_rows. Options as `ekfac` (damping null =
0.1 x mean eigenvalue per module).
"""

from __future__ import annotations

from datablame.methods.base import register
from datablame.methods.influence_common import ProjectedInfluence


@register
class KfacInfluence(ProjectedInfluence):
    name = "kfac"
    kind = "kfac"
    cost = "one forward+backward per row (covariances and row gradients in one pass), k x k eigendecompositions"
