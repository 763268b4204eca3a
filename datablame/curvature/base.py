"""The common shape of a preconditioner and how it is applied to gradient features.

Features are the projected per-row gradients of `GradientFeaturizer`: per module a row-major
`k_out x k_in` block G̃ = P_out G P_inᵀ. A preconditioner approximates the Fisher F of the
mean per-row loss in that space, block-diagonally over modules, and applies (F + λI)⁻¹.

Influence (Koh & Liang 2017, sign flipped so that higher = helpful):

    score(q, r) = g_qᵀ (F + λI)⁻¹ g_r

is the decrease of the query loss (nats) per unit of extra weight on row r in the mean
training objective; removing row r raises the query loss by about score / n_rows.

Damping λ: `damping=None` uses kronfluence's heuristic, `damping_scale` (0.1) times the mean
eigenvalue of each module's curvature (so it is scale free); a number is an absolute λ in
the Fisher's units (nats² per unit weight², for the mean per-row NLL in nats).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import torch

from datablame.errors import DatablameError
from datablame.layout import AttributionLayout

HEURISTIC_DAMPING_SCALE = 0.1  # kronfluence's default: λ = 0.1 x mean eigenvalue per module


def factor_path(work_dir: str | Path, kind: str) -> Path:
    """Where the influence methods keep fitted factors: <work_dir>/curvature/<kind>.safetensors
    (<run>/attribution/curvature/ekfac.safetensors for a run)."""
    return AttributionLayout(work_dir).factor_path(kind)


def split_blocks(x: torch.Tensor, shapes: list[tuple[str, int, int]]) -> list[torch.Tensor]:
    """Features [N, D] -> per-module views [N, k_out, k_in] (row-major, featurizer order)."""
    out, start = [], 0
    for _, o, i in shapes:
        out.append(x[:, start : start + o * i].reshape(len(x), o, i))
        start += o * i
    if start != x.shape[1]:
        raise ValueError(f"features have {x.shape[1]} columns but the modules add up to {start}")
    return out


class Preconditioner(ABC):
    """Per-module tensors + `precondition`. Subclasses set `kind` and `_apply_block`."""

    kind: ClassVar[str]

    def __init__(self, shapes: list[tuple[str, int, int]], tensors: dict[str, dict[str, torch.Tensor]], meta: dict | None = None) -> None:
        self.shapes = [tuple(s) for s in shapes]
        self.tensors = tensors
        self.meta = dict(meta or {})

    @property
    def modules(self) -> list[str]:
        return [n for n, _, _ in self.shapes]

    def eigenvalues(self, name: str) -> torch.Tensor:
        """The curvature's eigenvalues of one module (flattened), used for the damping heuristic."""
        return self.tensors[name]["lambda"].reshape(-1)

    def damping_for(self, name: str, damping: float | None, damping_scale: float = HEURISTIC_DAMPING_SCALE) -> float:
        if damping is not None:
            if damping < 0:
                raise DatablameError(f"damping must be >= 0, got {damping}", "set a non-negative damping (or null for the heuristic)")
            return float(damping)
        lam = float(self.eigenvalues(name).double().mean())
        # A module whose curvature is all zero (no loss signal) still needs an invertible system.
        return damping_scale * lam if lam > 0 else 1e-12

    @abstractmethod
    def _apply_block(self, name: str, g: torch.Tensor, damping: float) -> torch.Tensor:
        """(F_m + λI)⁻¹ applied to blocks g [N, k_out, k_in] (float64)."""

    def precondition(self, feats: torch.Tensor, damping: float | None = None, damping_scale: float = HEURISTIC_DAMPING_SCALE) -> torch.Tensor:
        """(F + λI)⁻¹ feats for features [N, D]; returns float64 [N, D]."""
        blocks = split_blocks(feats.double(), self.shapes)
        out = [
            self._apply_block(name, b, self.damping_for(name, damping, damping_scale)).reshape(len(feats), -1)
            for (name, _, _), b in zip(self.shapes, blocks, strict=True)
        ]
        return torch.cat(out, dim=1)

    def self_influence(
        self, feats: torch.Tensor, damping: float | None = None,
        damping_scale: float = HEURISTIC_DAMPING_SCALE, chunk: int = 4096,
    ) -> torch.Tensor:
        """g_rᵀ (F + λI)⁻¹ g_r for every row of feats [N, D], float64 [N] (chunked: one
        preconditioned chunk at a time, never all N preconditioned rows at once)."""
        out = torch.empty(len(feats), dtype=torch.float64)
        for s in range(0, len(feats), chunk):
            part = feats[s : s + chunk]
            out[s : s + chunk] = (self.precondition(part, damping, damping_scale) * part.double()).sum(dim=1)
        return out

    def scores(
        self, queries: torch.Tensor, rows: torch.Tensor, damping: float | None = None,
        damping_scale: float = HEURISTIC_DAMPING_SCALE, chunk: int = 65536,
    ) -> torch.Tensor:
        """Influence g_qᵀ (F + λI)⁻¹ g_r, float64 [Q, R]. Only the queries are preconditioned."""
        pq = self.precondition(queries, damping, damping_scale)
        out = torch.empty(len(queries), len(rows), dtype=torch.float64)
        for s in range(0, len(rows), chunk):
            out[:, s : s + chunk] = pq @ rows[s : s + chunk].double().T
        return out

    # -- persistence -------------------------------------------------------------------
    def save(self, path: str | Path, identity: dict | None = None) -> Path:
        """safetensors file; tensors named '<module>/<factor>', meta and identity as JSON."""
        import os

        from safetensors.torch import save_file

        path = Path(path)
        flat = {f"{m}/{k}": v.contiguous() for m, d in self.tensors.items() for k, v in d.items()}
        header = {
            "kind": self.kind,
            "shapes": json.dumps(self.shapes),
            "meta": json.dumps(self.meta, default=str),
            "identity": json.dumps(identity or {}, sort_keys=True, default=str),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        save_file(flat, str(tmp), metadata=header)
        os.replace(tmp, path)  # never a half-written factor file under the real name
        return path


def read_factors(path: str | Path) -> tuple[str, list, dict[str, dict[str, torch.Tensor]], dict, dict]:
    """(kind, shapes, tensors, meta, identity) from a file written by `Preconditioner.save`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DatablameError(f"no curvature factors at {path}", "fit them first (run `datablame attribute` with method ekfac)")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata() or {}
        for key in fh.keys():
            mod, fac = key.rsplit("/", 1)
            tensors.setdefault(mod, {})[fac] = fh.get_tensor(key)
    if "kind" not in header:
        raise DatablameError(f"{path} is not a datablame curvature file", "point at <run>/attribution/curvature/<kind>.safetensors")
    shapes = [tuple(s) for s in json.loads(header["shapes"])]
    return header["kind"], shapes, tensors, json.loads(header.get("meta", "{}")), json.loads(header.get("identity", "{}"))
