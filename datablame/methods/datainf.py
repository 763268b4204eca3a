"""DataInf (Kwon et al. 2024): influence with a closed-form per-layer inverse Hessian.

Per module block l (one selected linear layer; features from `gradient_features(...).blocks`)
the damped empirical Fisher H_l + λ_l I, H_l = (1/n) Σ_i g_il g_ilᵀ, is inverted with the
Sherman-Morrison swap of sum and inverse that defines DataInf:

    (H_l + λ_l I)⁻¹ ≈ 1/(n λ_l) Σ_i ( I - g_il g_ilᵀ / (λ_l + g_ilᵀ g_il) )

applied to the query gradient first (an inverse-Hessian-vector product in O(n d_l) per
query, as in the reference code), then dotted with every row:

    score[q, r] = Σ_l  v_qlᵀ (H_l + λ_l I)⁻¹ g_rl
                = Σ_l  1/(n λ_l) [ v_ql·g_rl - Σ_i c_il (v_ql·g_il)(g_il·g_rl) ],  c_il = 1/(λ_l + ‖g_il‖²)

Damping: λ_l = `lambda_scale` (0.1) x mean_i ‖g_il‖² / d_l, the mean eigenvalue of H_l — the
reference implementation's rule (`lambda_const = mean(mean(grad**2)) / 10` per layer); the
paper writes it as 0.1 (n d_l)⁻¹ Σ_i ∇ℓ_iᵀ∇ℓ_i. d_l is the block's (projected) dimension,
so λ_l stays the mean eigenvalue of the Fisher in the space the features live in.

Sign: DataInf's influence is -Σ_l v_lᵀ(H_l+λ_l)⁻¹ g_rl (> 0: upweighting the row raises the
validation loss). We return its negation: higher = the row pushed the query's loss down.
Unit: nats of query-loss decrease per unit up-weighting ε of the row in the mean training
loss (removing one of n rows is ε = -1/n), under the DataInf Hessian approximation.

Options (`attribution.options.datainf`): lambda_scale (default 0.1), query_chunk (queries
per inverse-Hessian-vector product batch).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from datablame.features.context import AttributionContext
from datablame.features.gradients import gradient_features
from datablame.methods.base import Method, MethodOptions, register
from datablame.store.rows import row_blocks


def block_damping(rows: torch.Tensor, lambda_scale: float) -> float:
    """λ_l = lambda_scale x mean_i ‖g_il‖² / d_l (the mean eigenvalue of the block's Fisher)."""
    return lambda_scale * float((rows.double() ** 2).sum(dim=1).mean()) / rows.shape[1]


def datainf_block_scores(rows: torch.Tensor, queries: torch.Tensor, lambda_scale: float) -> torch.Tensor:
    """DataInf scores of one block: rows [n, d], queries [Q, d] -> [Q, n] (float64).

    Matrix products run in the rows' dtype (float32 features stay float32: no float64 copy
    of a large row matrix); the per-row scalars are float64.
    """
    g = rows
    v = queries.to(g.dtype)
    n = g.shape[0]
    lam = block_damping(g, lambda_scale)
    if lam <= 0.0:  # every row gradient is zero in this block: it carries no influence
        return torch.zeros(len(v), n, dtype=torch.float64)
    c = 1.0 / (lam + (g.double() ** 2).sum(dim=1))
    # inverse-HVP of each query: Σ_i (v - c_i (v·g_i) g_i) / (n λ) = v / λ - Σ_i c_i (v·g_i) g_i / (n λ)
    coef = ((v @ g.T).double() * c[None, :]).to(g.dtype)  # [Q, n]
    ihvp = v / lam - (coef @ g) / (n * lam)
    return (ihvp @ g.T).double()


@register
class DataInf(Method):
    name = "datainf"
    family = "influence"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = "nats of query-loss decrease per unit up-weighting of the row (DataInf Hessian approximation)"
    cost = "gradient features (as grad_dot) + O(queries x rows x dim) for the per-layer inverse"

    class Options(MethodOptions):
        lambda_scale: float = Field(0.1, gt=0, description="λ_l = lambda_scale x mean eigenvalue of layer l's Fisher")
        query_chunk: int = Field(64, description="queries per inverse-HVP chunk (memory only; < 1 counts as 1)")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.lambda_scale, self.query_chunk = self.options.lambda_scale, max(self.options.query_chunk, 1)

    def fit(self, ctx: AttributionContext) -> None:
        gradient_features(ctx)

    def score(self, ctx: AttributionContext) -> np.ndarray:
        """`datainf_block_scores` summed over modules, streamed over blocks of rows (a feature
        store's rows are never loaded whole): pass 1 sums ‖g_il‖² for λ_l, pass 2 accumulates
        each query's inverse-HVP Σ_i c_il (v_l·g_il) g_il, pass 3 dots it with every row."""
        g = gradient_features(ctx)
        n, q_feats = len(g.rows), g.queries.to(torch.float32)
        spans, start = [], 0
        for _, o, i in g.shapes:
            spans.append((start, start + o * i))
            start += o * i
        sq = torch.zeros(len(spans), dtype=torch.float64)
        for _, b in row_blocks(g.rows):
            for m, (s, e) in enumerate(spans):
                sq[m] += (b[:, s:e].double() ** 2).sum()
        lams = [self.lambda_scale * float(sq[m]) / max(n, 1) / (e - s) for m, (s, e) in enumerate(spans)]
        # float32 sums, as `datainf_block_scores` (bit-identical to it when the rows fit one block)
        acc = [torch.zeros(len(q_feats), e - s, dtype=torch.float32) for s, e in spans]
        for _, b in row_blocks(g.rows):
            for m, (s, e) in enumerate(spans):
                if lams[m] <= 0.0:  # every row gradient is zero in this module: no influence
                    continue
                rows = b[:, s:e]
                c = 1.0 / (lams[m] + (rows.double() ** 2).sum(dim=1))
                for q0 in range(0, len(q_feats), self.query_chunk):
                    v = q_feats[q0 : q0 + self.query_chunk, s:e]
                    coef = ((v @ rows.T).double() * c[None, :]).to(rows.dtype)
                    acc[m][q0 : q0 + len(v)] += coef @ rows
        ihvp = [q_feats[:, s:e] / lam - a / (n * lam) for (s, e), lam, a in zip(spans, lams, acc, strict=True)]
        out = torch.zeros(len(q_feats), n, dtype=torch.float64)
        for r0, b in row_blocks(g.rows):
            for m, (s, e) in enumerate(spans):
                if lams[m] > 0.0:
                    out[:, r0 : r0 + len(b)] += (ihvp[m] @ b[:, s:e].T).double()
        return out.numpy()
