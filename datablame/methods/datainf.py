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

from datablame.errors import DatablameError
from datablame.methods.base import AttributionInputs, Method, register
from datablame.methods.grad_align import gradient_features


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
    unit = "nats of query-loss decrease per unit up-weighting of the row (DataInf Hessian approximation)"
    cost = "gradient features (as grad_dot) + O(queries x rows x dim) for the per-layer inverse"

    def __init__(self, lambda_scale: float = 0.1, query_chunk: int = 64) -> None:
        if lambda_scale <= 0:
            raise DatablameError(
                f"datainf lambda_scale must be > 0, got {lambda_scale}", "set attribution.options.datainf.lambda_scale > 0"
            )
        self.lambda_scale, self.query_chunk = float(lambda_scale), max(int(query_chunk), 1)

    def fit(self, inputs: AttributionInputs) -> None:
        gradient_features(inputs)

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        g = gradient_features(inputs)
        out = torch.zeros(len(g.queries), len(g.rows), dtype=torch.float64)
        for rb, qb in zip(g.blocks(g.rows), g.blocks(g.queries), strict=True):
            rows = rb.flatten(1)
            for start in range(0, len(qb), self.query_chunk):
                chunk = qb[start : start + self.query_chunk].flatten(1)
                out[start : start + len(chunk)] += datainf_block_scores(rows, chunk, self.lambda_scale)
        return out.numpy()
