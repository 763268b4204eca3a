"""Seeded random projections for the factored gradient feature.

For a linear layer W (out x in), the per-row gradient is G = sum_t g_t a_t^T. With
P_in (k_in x in) and P_out (k_out x out), the feature P_out G P_in^T =
sum_t (P_out g_t)(P_in a_t)^T is computed from projected vectors without forming G.
Entries have variance 1/k so E[<P G P'^T, P H P'^T>] = <G, H> (inner products are kept
in expectation; Johnson-Lindenstrauss bounds the error). A missing k means identity.
"""

from __future__ import annotations

import zlib

import torch

from datablame.config import ProjectionConfig


def _matrix(k: int, d: int, kind: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        m = torch.randn(k, d, generator=gen)
    elif kind == "rademacher":
        m = torch.randint(0, 2, (k, d), generator=gen).float() * 2 - 1
    else:  # pragma: no cover - config validation prevents this
        raise ValueError(kind)
    return m / (k**0.5)


class FactoredProjection:
    """Per-module (P_in, P_out); matrices depend only on (seed, module name, shape)."""

    def __init__(self, cfg: ProjectionConfig) -> None:
        self.cfg = cfg
        self._cache: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    @property
    def is_identity(self) -> bool:
        return self.cfg.k_in is None and self.cfg.k_out is None

    def matrices(self, name: str, in_features: int, out_features: int):
        if name not in self._cache:
            base = (self.cfg.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)
            k_in, k_out = self.cfg.k_in, self.cfg.k_out
            p_in = None if k_in is None or k_in >= in_features else _matrix(k_in, in_features, self.cfg.kind, base)
            p_out = (
                None if k_out is None or k_out >= out_features else _matrix(k_out, out_features, self.cfg.kind, base + 1)
            )
            self._cache[name] = (p_in, p_out)
        return self._cache[name]

    def describe(self) -> dict:
        return {"kind": self.cfg.kind, "seed": self.cfg.seed, "k_in": self.cfg.k_in, "k_out": self.cfg.k_out}
