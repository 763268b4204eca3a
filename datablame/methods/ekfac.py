"""Influence functions with EKFAC fitted in the projected gradient space (our fast path).

score[q, r] = g_qᵀ (F_EKFAC + λI)⁻¹ g_r over the run's projected per-row gradients
(`gradient_features`): K-FAC eigenbases of the projected activation / output-gradient
covariances, eigenvalues corrected with the rows' own gradients (`datablame.curvature.ekfac`).

Sign: higher = up-weighting (training on) the row lowers the query's loss. Unit: nats of
query-loss decrease per unit extra weight on the row in the mean training objective; removing
the row raises the query loss by about score / n_rows.

Options (`attribution.options.ekfac`):
- `damping` (null): absolute λ in Fisher units (nats² per unit weight²); null = kronfluence's
  heuristic `damping_scale` x mean eigenvalue of each module's Λ;
- `damping_scale` (0.1); `fisher` ("empirical": the rows' own labels; "true": labels sampled
  from the model, as kronfluence's default); `fit_rows` (null = all rows; else a seeded sample
  of that many rows fits the factors); `seed` (0); `reuse` (true: reuse saved factors);
  `normalize` (false; true: relative influence, the cosine of query and row gradients in the
  (F + λI)⁻¹ metric, unitless in [-1, 1]: see `methods/kfac.py`).

With identity projection (`attribution.projection.k_in/k_out: null`), the same modules,
empirical Fisher and the same damping it matches kronfluence's EKFAC (test: Spearman ≥ 0.95).
Cost: one extra forward+backward pass over the rows to fit (shared with the row features).
"""

from __future__ import annotations

from datablame.methods.base import register
from datablame.methods.kfac import ProjectedInfluence


@register
class EkfacInfluence(ProjectedInfluence):
    name = "ekfac"
    kind = "ekfac"
    cost = "one forward+backward per row (covariances and row gradients in one pass), k x k eigendecompositions"
