"""EKFAC in the projected feature space (George et al. 2018; kronfluence's default).

K-FAC's eigenbases (Q_A, Q_S from the projected covariances) are kept; its eigenvalues
T̄ σ_i α_j are replaced by the second moment of the per-row gradients in that basis,

    Λ[i, j] = E_r[ (Q_Sᵀ G̃_r Q_A)[i, j]² ],

the best diagonal fit of the Fisher in the Kronecker eigenbasis. G̃_r are the projected
per-row gradients of the fitting rows (the rows' gradient features with the empirical
Fisher). `Λ` is the "lambda matrix" of seed 000's inspection plots.
"""

from __future__ import annotations

import torch

from datablame.curvature.base import split_blocks
from datablame.curvature.covariance import KroneckerStats
from datablame.curvature.kfac import KfacPreconditioner


class EkfacPreconditioner(KfacPreconditioner):
    kind = "ekfac"

    @classmethod
    def fit(  # type: ignore[override]
        cls, stats: KroneckerStats, row_feats: torch.Tensor, shapes: list[tuple[str, int, int]],
        meta: dict | None = None, chunk: int = 4096,
    ) -> EkfacPreconditioner:
        kfac = KfacPreconditioner.fit(stats, shapes, meta)
        return cls.from_kfac(kfac, row_feats, chunk)

    @classmethod
    def from_kfac(cls, kfac: KfacPreconditioner, row_feats: torch.Tensor, chunk: int = 4096) -> EkfacPreconditioner:
        """Eigenvalue correction of fitted K-FAC factors with per-row features [R, D]."""
        out = cls(kfac.shapes, {n: dict(t) for n, t in kfac.tensors.items()}, dict(kfac.meta))
        sums = {n: torch.zeros(o, i, dtype=torch.float64) for n, o, i in kfac.shapes}
        for s in range(0, len(row_feats), chunk):
            for (name, _, _), b in zip(kfac.shapes, split_blocks(row_feats[s : s + chunk].double(), kfac.shapes), strict=True):
                sums[name] += out.rotate(name, b).square().sum(0)
        n = max(len(row_feats), 1)
        for name in sums:
            out.tensors[name]["kfac_lambda"] = out.tensors[name]["lambda"]
            out.tensors[name]["lambda"] = sums[name] / n
        out.meta["n_lambda_rows"] = len(row_feats)
        return out
