"""K-FAC in the projected feature space (Martens & Grosse 2015; LoGra, Choe et al. 2024).

Per module, the Fisher of the mean per-row loss over projected weight gradients is
approximated by a Kronecker product, F ≈ T̄ · (S ⊗ A), with A, S the per-token covariances of
projected activations and output gradients (`covariance.py`) and T̄ the mean number of real
tokens per row (the sum over a row's tokens turns per-token covariances into a per-row
Fisher; kronfluence leaves T̄ out, which only rescales the curvature). With A = Q_A diag(α) Q_Aᵀ
and S = Q_S diag(σ) Q_Sᵀ,

    (F + λI)⁻¹ G = Q_S [ (Q_Sᵀ G Q_A) / (Λ + λ) ] Q_Aᵀ,   Λ[i, j] = T̄ σ_i α_j.

G is a `k_out x k_in` block, so every step is a small matrix product.
"""

from __future__ import annotations

import torch

from datablame.curvature.base import Preconditioner
from datablame.curvature.covariance import KroneckerStats


def eigh64(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of a symmetric matrix in float64 (ascending eigenvalues)."""
    m = m.double()
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return vals, vecs


class KfacPreconditioner(Preconditioner):
    kind = "kfac"

    @classmethod
    def fit(cls, stats: KroneckerStats, shapes: list[tuple[str, int, int]], meta: dict | None = None) -> KfacPreconditioner:
        covs = stats.covariances()
        tensors = {}
        for name, o, i in shapes:
            a, s = covs[name]
            if a.shape != (i, i) or s.shape != (o, o):
                raise ValueError(f"covariances of {name} are {tuple(a.shape)}, {tuple(s.shape)}; features are {o}x{i}")
            a_vals, a_vecs = eigh64(a)
            s_vals, s_vecs = eigh64(s)
            tensors[name] = {
                "a_eigvals": a_vals, "a_eigvecs": a_vecs, "s_eigvals": s_vals, "s_eigvecs": s_vecs,
                "lambda": stats.tokens_per_row * torch.outer(s_vals, a_vals),
            }
        info = {"n_rows": stats.n_rows, "n_tokens": stats.n_tokens, "tokens_per_row": stats.tokens_per_row}
        return cls(shapes, tensors, {**(meta or {}), **info})

    def rotate(self, name: str, g: torch.Tensor) -> torch.Tensor:
        """Blocks [N, o, i] into the factors' eigenbasis: Q_Sᵀ G Q_A."""
        t = self.tensors[name]
        return t["s_eigvecs"].double().T @ g @ t["a_eigvecs"].double()

    def unrotate(self, name: str, g: torch.Tensor) -> torch.Tensor:
        t = self.tensors[name]
        return t["s_eigvecs"].double() @ g @ t["a_eigvecs"].double().T

    def _apply_block(self, name: str, g: torch.Tensor, damping: float) -> torch.Tensor:
        lam = self.tensors[name]["lambda"].double()
        return self.unrotate(name, self.rotate(name, g) / (lam + damping))
