"""Identity preconditioner: F = I, so influence reduces to the gradient dot product."""

from __future__ import annotations

import torch

from datablame.curvature.base import HEURISTIC_DAMPING_SCALE, Preconditioner


class IdentityPreconditioner(Preconditioner):
    kind = "identity"

    def __init__(self, shapes: list[tuple[str, int, int]], meta: dict | None = None) -> None:
        super().__init__(shapes, {}, meta)

    def eigenvalues(self, name: str) -> torch.Tensor:
        return torch.ones(1, dtype=torch.float64)

    def _apply_block(self, name: str, g: torch.Tensor, damping: float) -> torch.Tensor:
        return g  # (I + λI)⁻¹ only rescales every score alike; keep the unit of grad_dot

    def precondition(self, feats: torch.Tensor, damping: float | None = None, damping_scale: float = HEURISTIC_DAMPING_SCALE) -> torch.Tensor:
        return feats.double()
