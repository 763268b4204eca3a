"""Preconditioners fitted in the projected gradient-feature space: identity, diagonal,
K-FAC and EKFAC (`k x k` factors per module), plus an explicit-Hessian / conjugate-gradient
path for small parameter counts (`hessian.py`) and factor inspection plots (`inspect.py`).

All apply (F + λI)⁻¹ to projected per-row gradients; see `base.py` for the influence sign,
unit and damping convention.
"""

from __future__ import annotations

from pathlib import Path

from datablame.curvature.base import (
    HEURISTIC_DAMPING_SCALE,
    Preconditioner,
    factor_path,
    read_factors,
    split_blocks,
)
from datablame.curvature.covariance import KroneckerStats, collect_kronecker_stats
from datablame.curvature.diagonal import DiagonalPreconditioner
from datablame.curvature.ekfac import EkfacPreconditioner
from datablame.curvature.identity import IdentityPreconditioner
from datablame.curvature.kfac import KfacPreconditioner

PRECONDITIONERS: dict[str, type[Preconditioner]] = {
    c.kind: c for c in (IdentityPreconditioner, DiagonalPreconditioner, KfacPreconditioner, EkfacPreconditioner)
}


def load_preconditioner(path: str | Path) -> tuple[Preconditioner, dict]:
    """A saved preconditioner and the identity it was saved with."""
    kind, shapes, tensors, meta, identity = read_factors(path)
    cls = PRECONDITIONERS[kind]
    if cls is IdentityPreconditioner:
        return IdentityPreconditioner(shapes, meta), identity
    return cls(shapes, tensors, meta), identity


__all__ = [
    "HEURISTIC_DAMPING_SCALE", "PRECONDITIONERS", "DiagonalPreconditioner", "EkfacPreconditioner",
    "IdentityPreconditioner", "KfacPreconditioner", "KroneckerStats", "Preconditioner",
    "collect_kronecker_stats", "factor_path", "load_preconditioner", "read_factors", "split_blocks",
]
