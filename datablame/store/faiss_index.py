"""FAISS indexes over a feature store: exact flat, IVF and IVF-PQ, with measured recall.

Vectors go to faiss as float32 (fp16 rows converted chunk by chunk); cosine divides each row by
its stored fp32 norm so index scores match `exact_topk`. Every build reports recall@k against
exact search, and with `nprobe=None` raises nprobe until a target recall holds, so an index is
never used without knowing how much it misses. k-means is seeded, so builds are reproducible.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.store import manifest as mf
from datablame.store.reader import FeatureStore, readonly_tensor
from datablame.store.search import (
    Metric,
    Source,
    as_source,
    check_metric,
    exact_topk,
    iter_blocks,
    source_shape,
)
from datablame.utils.io import atomic_write_json, file_mode

Kind = Literal["flat", "ivf", "ivfpq"]


def _faiss() -> Any:
    """faiss is imported on first use: exact-search-only processes never load it (or its
    second OpenMP runtime)."""
    import faiss

    return faiss


class FaissIndex:
    """A faiss index plus what it was built from (metric, rows, store identity) and its recall."""

    def __init__(self, index: Any, *, kind: str, metric: str, dim: int, n_rows: int, info: dict[str, Any]) -> None:
        self.index, self.kind, self.metric, self.dim, self.n_rows = index, kind, metric, dim, n_rows
        self.info = info

    def __repr__(self) -> str:
        return f"FaissIndex(kind={self.kind!r}, metric={self.metric!r}, n_rows={self.n_rows}, nprobe={self.nprobe})"

    @property
    def nprobe(self) -> int | None:
        return int(self.index.nprobe) if self.kind != "flat" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "flat":
            self.index.nprobe = int(value)
            self.info["nprobe"] = int(value)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [Q, k] float32, row indices [Q, k] int64); -1 pads where fewer were found."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DatablameError(f"queries have shape {q.shape} but the index has dim {self.dim}.", "featurize queries with the store's model and projection.")
        if self.metric == "cosine":
            n = np.linalg.norm(q, axis=1, keepdims=True)
            if (n == 0).any():
                raise DatablameError("a query has an all-zero feature, so its cosine is undefined.", "use metric='dot' or check the query.")
            q = q / n
        scores, idx = self.index.search(np.ascontiguousarray(q), min(k, self.n_rows))
        return scores.astype(np.float32), idx.astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the index (temp name + rename) and its metadata to `path` and `path`.json."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would ignore the umask
        try:
            _faiss().write_index(self.index, tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        meta = {"kind": self.kind, "metric": self.metric, "dim": self.dim, "n_rows": self.n_rows, "file_size": path.stat().st_size, "info": self.info}
        atomic_write_json(_meta_path(path), meta)
        return path


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def load_faiss_index(path: str | Path, *, expect_store: FeatureStore | None = None) -> FaissIndex:
    """Load a saved index; with `expect_store`, refuse one built from other or fewer rows."""
    path = Path(path)
    meta_p = _meta_path(path)
    if not path.is_file() or not meta_p.is_file():
        raise DatablameError(f"no FAISS index at {path} (or its {meta_p.name} is missing).", "build it with `datablame index` (build_faiss_index(...).save(path)).")
    meta = json.loads(meta_p.read_text("utf-8"))
    if meta.get("file_size") != path.stat().st_size:
        raise DatablameError(f"FAISS index at {path} does not match its metadata (interrupted save?).", "rebuild the index.")
    idx = _faiss().read_index(str(path))
    out = FaissIndex(idx, kind=meta["kind"], metric=meta["metric"], dim=meta["dim"], n_rows=meta["n_rows"], info=meta["info"])
    if out.kind != "flat" and "nprobe" in out.info:
        out.index.nprobe = int(out.info["nprobe"])
    if expect_store is not None:
        diff = mf.identity_diff(expect_store.identity, out.info.get("store_identity") or {})
        stale = out.n_rows != expect_store.n_rows
        if diff or stale:
            why = f"was built from {diff}" if diff else f"covers {out.n_rows} rows but the store has {expect_store.n_rows}"
            raise DatablameError(f"FAISS index at {path} {why}.", "rebuild the index from the current store (`datablame index`).")
    return out


def _chunks32(src: FeatureStore | np.ndarray, metric: str, batch_rows: int) -> Any:
    """(start, float32 C-contiguous rows [r, dim]) — unit-norm (by stored norms) for cosine."""
    for start, arr, norms in iter_blocks(src):
        t = readonly_tensor(arr)
        for a in range(0, arr.shape[0], batch_rows):
            x = t[a : a + batch_rows].to(torch.float32)
            if metric == "cosine":
                x = x / torch.from_numpy(norms[a : a + batch_rows]).clamp_min(1e-30)[:, None]
            yield start + a, np.ascontiguousarray(x.numpy())


def _take(src: FeatureStore | np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """Selected rows (sorted indices) as float32, normalised like _chunks32."""
    rows = np.sort(rows)
    out = []
    for start, arr, norms in iter_blocks(src):
        sel = rows[(rows >= start) & (rows < start + arr.shape[0])] - start
        if len(sel):
            x = np.asarray(arr[sel], dtype=np.float32)
            out.append(x / np.maximum(norms[sel], 1e-30)[:, None] if metric == "cosine" else x)
    return np.ascontiguousarray(np.concatenate(out))


def _default_m(dim: int) -> int:
    """Largest sub-quantizer count dividing dim with >= 4 dims each (at most 64)."""
    return max(d for d in range(1, min(64, max(1, dim // 4)) + 1) if dim % d == 0)


def recall_at_k_vs_exact(index: FaissIndex, store: Source, sample_queries: np.ndarray, k: int = 10, *, exact: np.ndarray | None = None) -> float:
    """Mean fraction of the exact top-k rows that the index also returns in its top-k."""
    if exact is None:
        _, exact = exact_topk(store, sample_queries, k, metric=index.metric)  # type: ignore[arg-type]
    _, approx = index.search(sample_queries, k)
    hits = [len(set(a.tolist()) & set(e.tolist())) / len(e) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits))


def tune_nprobe(index: FaissIndex, store: Source, queries: np.ndarray, k: int = 10, target: float = 0.95) -> tuple[int, float]:
    """Smallest nprobe in 1, 2, 4, ... nlist whose recall@k reaches `target`; sets it."""
    _, exact = exact_topk(store, queries, k, metric=index.metric)  # type: ignore[arg-type]
    nlist = int(index.index.nlist)
    probes = sorted({min(2**j, nlist) for j in range(int(math.log2(nlist)) + 2)})
    recall = 0.0
    for p in probes:
        index.nprobe = p
        recall = recall_at_k_vs_exact(index, store, queries, k, exact=exact)
        if recall >= target:
            break
    return int(index.nprobe), recall


def build_faiss_index(
    store: Source,
    kind: Kind = "ivf",
    *,
    metric: Metric,
    nlist: int | None = None,
    m_pq: int | None = None,
    nbits: int = 8,
    nprobe: int | None = None,
    target_recall: float = 0.95,
    train_sample: int | None = None,
    recall_queries: int | np.ndarray = 100,
    k: int = 10,
    seed: int = 0,
    batch_rows: int = 16384,
) -> FaissIndex:
    """Build a flat / IVF / IVF-PQ inner-product index over all stored rows.

    nlist defaults to ~4*sqrt(N); training uses `train_sample` rows (default 40 per list,
    just above faiss' minimum). `recall_queries` (a count of stored rows to sample, or query
    features) measure recall@k vs exact; nprobe=None tunes nprobe up to `target_recall`.
    `info` records nlist, nprobe, recall, timings and the store identity.
    """
    check_metric(metric)
    if kind not in ("flat", "ivf", "ivfpq"):
        raise DatablameError(f"unknown index kind {kind!r}.", "use 'flat', 'ivf' or 'ivfpq'.")
    src = as_source(store)
    n, dim = source_shape(src)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"kind": kind, "metric": metric, "seed": seed}
    faiss = _faiss()
    if kind == "flat":
        idx = faiss.IndexFlatIP(dim)
    else:
        nl = nlist or mf.default_nlist(n)
        if nl > n:
            raise DatablameError(f"nlist {nl} is larger than the {n} stored rows.", "pass a smaller nlist (about 4*sqrt(rows)).")
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            idx = faiss.IndexIVFFlat(quantizer, dim, nl, faiss.METRIC_INNER_PRODUCT)
        else:
            m = m_pq or _default_m(dim)
            if dim % m:
                raise DatablameError(f"m_pq {m} does not divide dim {dim}.", f"pass an m_pq that divides {dim} (e.g. {_default_m(dim)}).")
            idx = faiss.IndexIVFPQ(quantizer, dim, nl, m, nbits, faiss.METRIC_INNER_PRODUCT)
            idx.pq.cp.seed = seed
            info.update(m_pq=m, nbits=nbits)
        idx.cp.seed = seed
        n_train = min(n, train_sample or max(40 * nl, 1000))
        train = _take(src, rng.choice(n, n_train, replace=False), metric)
        idx.train(train)
        del train
        info.update(nlist=nl, train_rows=n_train)
    for _, x in _chunks32(src, metric, batch_rows):
        idx.add(x)
    info["build_s"] = time.perf_counter() - t0
    out = FaissIndex(idx, kind=kind, metric=metric, dim=dim, n_rows=n, info=info)
    if isinstance(src, FeatureStore):
        info["store_identity"] = src.identity
        info["store_path"] = str(src.path)
    queries = recall_queries
    if isinstance(queries, (int, np.integer)):
        queries = _take(src, rng.choice(n, min(int(queries), n), replace=False), "dot")
    t1 = time.perf_counter()
    kk = min(k, n)
    if kind != "flat" and nprobe is None:
        _, recall = tune_nprobe(out, src, queries, kk, target_recall)
    else:
        if nprobe is not None:
            out.nprobe = nprobe
        recall = recall_at_k_vs_exact(out, src, queries, kk)
    info.update({f"recall_at_{kk}": recall, "recall_queries": int(len(queries)), "nprobe": out.nprobe, "tune_s": time.perf_counter() - t1})
    return out
