"""Influence functions with a diagonal Fisher in the projected gradient space.

score[q, r] = Σ_j g_q[j] g_r[j] / (E_r'[g_r'[j]²] + λ): grad-dot with every projected
coordinate rescaled by its mean squared gradient over the fitting rows
(`datablame.curvature.diagonal`). No covariance pass: fitting reads the row features.

Sign: higher = up-weighting (training on) the row lowers the query's loss. Unit: nats of
query-loss decrease per unit extra weight on the row in the mean training objective; removing
the row raises the query loss by about score / n_rows. Options as `ekfac` (damping null =
0.1 x mean of the diagonal per module).
"""

from __future__ import annotations

from datablame.methods.base import register
from datablame.methods.kfac import ProjectedInfluence


@register
class DiagInfluence(ProjectedInfluence):
    name = "diag_influence"
    kind = "diagonal"
    cost = "one forward+backward per row (the row features), no extra pass"
