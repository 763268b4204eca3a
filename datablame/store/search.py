"""Exact top-k over a feature store, streaming shard by shard in bounded memory.

fp16 rows are converted to fp32 in small cache-sized chunks (a preallocated buffer, so no
allocation per chunk) and multiplied with the fp32 queries; scores collect in a block buffer
and one top-k per block is merged into the running top-k. Ties break toward the lower row
index, so results are deterministic and match a brute-force argsort.

On a small or shared CPU, set OMP_WAIT_POLICY=PASSIVE before torch is imported: spinning
OpenMP workers otherwise stall each chunk when another process holds a core (measured 10x
slower single-query p50 on a busy 2-core machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.store.reader import FeatureStore, open_store, readonly_tensor

Metric = Literal["dot", "cosine"]
Source = FeatureStore | np.ndarray | str | Path
_BLOCK_ELEMS = 1 << 22  # scores held per block before a top-k merge (16 MB fp32)
_MAX_FULL_SCORES = 1 << 28  # exact_scores refuses a larger [Q, N] matrix (1 GB fp32)


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DatablameError(f"device {str(device)!r} is not available on this machine.", "pass device='cpu'.")
    return dev


def check_metric(metric: str) -> None:
    if metric not in ("dot", "cosine"):
        raise DatablameError(f"unknown metric {metric!r}.", "use metric='dot' or metric='cosine'.")


def as_source(store: Source) -> FeatureStore | np.ndarray:
    """A FeatureStore (opened from a path if needed) or a 2-D float array of rows."""
    if isinstance(store, (str, Path)):
        return open_store(store)
    if isinstance(store, np.ndarray):
        if store.ndim != 2:
            raise DatablameError(f"row array must be 2-D [rows, dim], got shape {store.shape}.", "pass a [rows, dim] array or a FeatureStore.")
        return store
    if not isinstance(store, FeatureStore):
        raise DatablameError(f"expected a FeatureStore, a store path or an array, got {type(store).__name__}.", "open the store with open_store(path).")
    return store


def source_shape(src: FeatureStore | np.ndarray) -> tuple[int, int]:
    return (src.n_rows, src.dim) if isinstance(src, FeatureStore) else (src.shape[0], src.shape[1])


def iter_blocks(src: FeatureStore | np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, rows [r, dim] fp16/fp32, norms [r] fp32) covering all rows in order."""
    if isinstance(src, FeatureStore):
        yield from src.iter_shards()
    else:
        rows = np.ascontiguousarray(src, dtype=np.float32)
        yield 0, rows, np.linalg.norm(rows, axis=1).astype(np.float32)


def prepare_queries(queries: np.ndarray | torch.Tensor, dim: int, metric: str, device: torch.device) -> torch.Tensor:
    """Validate queries ([Q, dim] or [dim]) and return fp32 on `device`, unit-norm for cosine."""
    q = queries.detach().cpu() if isinstance(queries, torch.Tensor) else torch.from_numpy(np.asarray(queries))
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != dim:
        raise DatablameError(
            f"queries have shape {tuple(q.shape)} but the stored rows have dim {dim}.",
            "featurize the queries with the same model, modules and projection as the store.",
        )
    q = q.to(torch.float32)
    if not bool(torch.isfinite(q).all()):
        raise DatablameError("a query feature contains NaN or inf.", "check the query rows (empty completion? diverged model?).")
    if metric == "cosine":
        n = torch.linalg.vector_norm(q, dim=1, keepdim=True)
        if bool((n == 0).any()):
            i = int((n[:, 0] == 0).nonzero()[0, 0])
            raise DatablameError(f"query {i} has an all-zero gradient feature, so its cosine is undefined.", "use metric='dot', or check that query's completion tokens.")
        q = q / n
    return q.to(device).contiguous()


def _chunks(src: FeatureStore | np.ndarray, batch_rows: int, dev: torch.device) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(global start, fp32 rows on `dev` [r, dim], fp32 norms [r]) in chunks of batch_rows.
    The fp32 tensor is a reused buffer: valid only until the next chunk."""
    dim = source_shape(src)[1]
    buf = torch.empty((batch_rows, dim), dtype=torch.float32, device=dev)
    for start, arr, norms in iter_blocks(src):
        t, nt = readonly_tensor(arr), torch.from_numpy(norms)
        for a in range(0, arr.shape[0], batch_rows):
            b = min(a + batch_rows, arr.shape[0])
            chunk = buf[: b - a]
            chunk.copy_(t[a:b])
            yield start + a, chunk, nt[a:b].to(dev)


def _default_batch_rows(dim: int, dev: torch.device) -> int:
    # CPU: ~4 MB of fp32 so conversion and matmul stay in cache; GPU: ~256 MB per transfer.
    target = (1 << 22) if dev.type == "cpu" else (1 << 28)
    return max(16, target // (4 * dim))


def _block_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of s [Q, R]; among scores tied at the cut, the lowest indices win."""
    kk = min(k, s.shape[1])
    v, i = torch.topk(s, kk, dim=1)
    kth = v[:, -1:]
    crowded = ((s >= kth).sum(dim=1) > kk).nonzero().flatten().tolist()
    for q in crowded:  # rare: exact ties straddle the cut
        cand = (s[q] >= kth[q]).nonzero().flatten()
        order = torch.sort(s[q, cand], descending=True, stable=True).indices[:kk]
        i[q], v[q] = cand[order], s[q, cand[order]]
    return v, i


def _merge(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k best of each row ordered by (score desc, index asc)."""
    o = torch.argsort(i, dim=1, stable=True)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.argsort(v, dim=1, descending=True, stable=True)[:, :k]
    return v.gather(1, o), i.gather(1, o)


def exact_topk(
    store: Source,
    queries: np.ndarray | torch.Tensor,
    k: int,
    *,
    metric: Metric,
    device: str = "cpu",
    batch_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows per query: (scores [Q, k] float32, row indices [Q, k] int64).

    dot = <q, x_fp16>; cosine = <q, x_fp16> / (|q| |x|) with |x| the stored fp32 norm
    (a zero row scores 0). k larger than the store returns every row.
    """
    check_metric(metric)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DatablameError(f"k must be a positive integer, got {k!r}.", "pass k >= 1.")
    src = as_source(store)
    n, dim = source_shape(src)
    dev = _device(device)
    q = prepare_queries(queries, dim, metric, dev)
    nq, k = q.shape[0], min(k, n)
    br = batch_rows or _default_batch_rows(dim, dev)
    block_rows = max(br, min(n, _BLOCK_ELEMS // nq))
    scores = torch.empty((nq, block_rows), dtype=torch.float32, device=dev)
    best_v = torch.empty((nq, 0), dtype=torch.float32, device=dev)
    best_i = torch.empty((nq, 0), dtype=torch.int64, device=dev)
    block_start, fill = 0, 0

    def flush() -> None:
        nonlocal best_v, best_i, block_start, fill
        if fill:
            v, i = _block_topk(scores[:, :fill], k)
            best_v, best_i = _merge(torch.cat([best_v, v], 1), torch.cat([best_i, i + block_start], 1), k)
        block_start, fill = block_start + fill, 0

    with torch.inference_mode():
        for start, chunk, norms in _chunks(src, br, dev):
            r = chunk.shape[0]
            if fill + r > block_rows:
                flush()
            assert start == block_start + fill, "shards must cover rows contiguously"
            s = q @ chunk.T
            if metric == "cosine":
                s /= norms.clamp_min(torch.finfo(torch.float32).tiny)
            scores[:, fill : fill + r] = s
            fill += r
        flush()
    return best_v.cpu().numpy(), best_i.cpu().numpy()


def exact_scores(
    store: Source,
    queries: np.ndarray | torch.Tensor,
    metric: Metric,
    *,
    device: str = "cpu",
    batch_rows: int | None = None,
) -> np.ndarray:
    """Every score, [Q, n_rows] float32, same definition as exact_topk. For small stores."""
    check_metric(metric)
    src = as_source(store)
    n, dim = source_shape(src)
    dev = _device(device)
    q = prepare_queries(queries, dim, metric, dev)
    if q.shape[0] * n > _MAX_FULL_SCORES:
        raise DatablameError(
            f"{q.shape[0]} queries x {n} rows is too large a score matrix to return in full.",
            "use exact_topk(store, queries, k) or a FAISS index instead.",
        )
    out = np.empty((q.shape[0], n), dtype=np.float32)
    with torch.inference_mode():
        for start, chunk, norms in _chunks(src, batch_rows or _default_batch_rows(dim, dev), dev):
            s = q @ chunk.T
            if metric == "cosine":
                s /= norms.clamp_min(torch.finfo(torch.float32).tiny)
            out[:, start : start + chunk.shape[0]] = s.cpu().numpy()
    return out
