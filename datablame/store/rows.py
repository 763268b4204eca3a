"""Row features of a feature store, read block by block from the memory-mapped fp16 shards.

`StoreRows` stands in for the [n_rows, dim] float32 row-feature tensor of `GradFeatures`
without ever holding it: `len`, `shape`, slicing and gathering (`rows[a:b]`, `rows[idx]`)
return float32 tensors of just those rows, and `row_blocks` walks any row source in blocks of
about `BLOCK_BYTES` of float64. Scoring code that works block by block (`dot_scores`) keeps
its peak memory at a block plus the [Q, n_rows] float64 score matrix, whatever the store size.
Every element is computed exactly as on the whole matrix (fp16 -> fp32 -> fp64, one dot
product per (query, row) pair), so blocking changes no score beyond summation order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from datablame.store.reader import FeatureStore, readonly_tensor

BLOCK_BYTES = 64 << 20  # float64 bytes of one scoring block (~585 rows at dim 14336)


def block_rows_for(dim: int, block_bytes: int | None = None) -> int:
    return max(1, (BLOCK_BYTES if block_bytes is None else block_bytes) // (8 * max(dim, 1)))


class StoreRows:
    """The rows of `store` as a lazily read [n_rows, dim] float32 matrix."""

    dtype = torch.float32

    def __init__(self, store: FeatureStore, block_rows: int | None = None) -> None:
        self.store = store
        self.block_rows = block_rows or block_rows_for(store.dim)

    def __repr__(self) -> str:
        return f"StoreRows({self.store!r}, block_rows={self.block_rows})"

    def __len__(self) -> int:
        return self.store.n_rows

    @property
    def shape(self) -> tuple[int, int]:
        return (self.store.n_rows, self.store.dim)

    @property
    def nbytes(self) -> int:
        return 0  # nothing held in memory (the shards are memory-mapped)

    def _range(self, start: int, stop: int) -> torch.Tensor:
        out = torch.empty(max(stop - start, 0), self.store.dim, dtype=torch.float32)
        for s0, arr, _ in self.store.iter_shards():
            lo, hi = max(start, s0), min(stop, s0 + arr.shape[0])
            if lo < hi:
                out[lo - start : hi - start].copy_(readonly_tensor(_read_rows(arr, lo - s0, hi - s0)))
        return out

    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(idx), self.store.dim, dtype=torch.float32)
        for s0, arr, _ in self.store.iter_shards():
            hit = np.flatnonzero((idx >= s0) & (idx < s0 + arr.shape[0]))
            if len(hit):
                out[torch.from_numpy(hit)] = torch.from_numpy(np.asarray(arr[idx[hit] - s0], dtype=np.float32))
        return out

    def __getitem__(self, key: Any) -> torch.Tensor:
        n = self.store.n_rows
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._range(start, stop)
            key = np.arange(start, stop, step)
        if isinstance(key, int | np.integer):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} of {n}")
            return self._range(i, i + 1)[0]
        idx = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return self._gather(idx)

    def materialize(self) -> torch.Tensor:
        """Every row as one float32 tensor (memory: 2x the fp16 store); only for small stores."""
        return self._range(0, self.store.n_rows)


def _read_rows(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows [lo, hi) of a shard. From a memory-mapped .npy they are read with a plain file read
    (same bytes): pages touched through the map would stay in this process' RSS until the map
    is dropped, so a pass over the store would grow RSS to the store's size."""
    if isinstance(arr, np.memmap) and arr.filename and arr.flags.c_contiguous:
        dim = arr.shape[1]
        return np.fromfile(arr.filename, dtype=arr.dtype, count=(hi - lo) * dim,
                           offset=arr.offset + lo * dim * arr.dtype.itemsize).reshape(hi - lo, dim)
    return arr[lo:hi]


def row_blocks(rows: torch.Tensor | StoreRows, block_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float32 block [b, dim]) over `rows` in order; a tensor is sliced without a copy."""
    n = len(rows)
    if block_rows is None:
        block_rows = rows.block_rows if isinstance(rows, StoreRows) else block_rows_for(rows.shape[1])
    for start in range(0, n, block_rows):
        yield start, rows[start : min(start + block_rows, n)]


def dot_scores(
    queries: torch.Tensor, rows: torch.Tensor | StoreRows, *, normalize: bool = False, block_rows: int | None = None
) -> np.ndarray:
    """queries [Q, D] @ rows.T in float64, [Q, n_rows], one block of rows at a time; with
    `normalize`, both sides are unit-normalised first (cosine)."""
    q = queries.double()
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
    out = np.empty((len(q), len(rows)), dtype=np.float64)
    res = torch.from_numpy(out)
    for start, block in row_blocks(rows, block_rows):
        b = block.double()
        if normalize:
            b = torch.nn.functional.normalize(b, dim=1)
        res[:, start : start + len(b)] = q @ b.T
    return out
