"""Diagonal preconditioner: F ≈ diag(E_r[G̃_r ⊙ G̃_r]) in the projected feature space.

The mean over fitting rows of each squared feature coordinate (kronfluence's `diagonal`
strategy, in the projected space). Cheap: one pass over the row features, no covariances.
"""

from __future__ import annotations

import torch

from datablame.curvature.base import Preconditioner, split_blocks


class DiagonalPreconditioner(Preconditioner):
    kind = "diagonal"

    @classmethod
    def fit(cls, row_feats: torch.Tensor, shapes: list[tuple[str, int, int]], meta: dict | None = None, chunk: int = 4096) -> DiagonalPreconditioner:
        """row_feats [R, D]: per-row projected gradients of the fitting rows."""
        sums = [torch.zeros(o, i, dtype=torch.float64) for _, o, i in shapes]
        for s in range(0, len(row_feats), chunk):
            for acc, b in zip(sums, split_blocks(row_feats[s : s + chunk].double(), shapes), strict=True):
                acc += b.square().sum(0)
        n = max(len(row_feats), 1)
        tensors = {name: {"lambda": acc / n} for (name, _, _), acc in zip(shapes, sums, strict=True)}
        return cls(shapes, tensors, {**(meta or {}), "n_rows": len(row_feats)})

    def _apply_block(self, name: str, g: torch.Tensor, damping: float) -> torch.Tensor:
        return g / (self.tensors[name]["lambda"].double() + damping)
