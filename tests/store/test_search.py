"""Exact streaming search vs numpy brute force, tie-breaking, and FAISS indexes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datablame.errors import DatablameError
from datablame.store import (
    build_faiss_index,
    build_store,
    exact_scores,
    exact_topk,
    load_faiss_index,
    open_store,
    recall_at_k_vs_exact,
)

IDENT = {"model_fingerprint": "m", "data_fingerprint": "d"}


def make_store(path, x, shard_size=64):
    build_store(path, n_rows=len(x), row_ids=[str(i) for i in range(len(x))], identity=IDENT,
                featurize=lambda s, e: x[s:e], dim=x.shape[1], shard_size=shard_size, progress=False)
    return open_store(path)


def brute(x16: np.ndarray, norms: np.ndarray, q: np.ndarray, k: int, metric: str):
    s = q.astype(np.float64) @ x16.astype(np.float64).T
    if metric == "cosine":
        s = s / np.linalg.norm(q, axis=1, keepdims=True) / norms[None]
    idx = np.stack([np.lexsort((np.arange(s.shape[1]), -row))[:k] for row in s])
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("batch_rows", [None, 7])
def test_exact_topk_matches_brute_force(tmp_path, metric, batch_rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    store = make_store(tmp_path / "s", x)
    q = rng.standard_normal((5, 24)).astype(np.float32)
    scores, idx = exact_topk(store, q, 10, metric=metric, batch_rows=batch_rows)
    ref_s, ref_i = brute(x.astype(np.float16), np.linalg.norm(x, axis=1), q, 10, metric)
    assert scores.shape == (5, 10) and scores.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-5, atol=1e-5)
    full = exact_scores(store, q, metric=metric)
    np.testing.assert_allclose(np.take_along_axis(full, idx, 1), scores, rtol=1e-6)
    s1, i1 = exact_topk(tmp_path / "s", q[0], 3, metric=metric)  # path and a 1-D query
    np.testing.assert_array_equal(i1, idx[:1, :3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_exact_topk_on_cuda_matches_cpu(tmp_path):
    rng = np.random.default_rng(3)
    store = make_store(tmp_path / "s", rng.standard_normal((500, 24)).astype(np.float32))
    q = rng.standard_normal((3, 24)).astype(np.float32)
    for metric in ("dot", "cosine"):
        cs, ci = exact_topk(store, q, 10, metric=metric)
        gs, gi = exact_topk(store, q, 10, metric=metric, device="cuda")
        np.testing.assert_array_equal(gi, ci)
        np.testing.assert_allclose(gs, cs, rtol=1e-4, atol=1e-4)


def test_ties_break_toward_lower_row_index(tmp_path):
    x = np.zeros((200, 8), dtype=np.float32)
    x[:, 0] = 1.0
    x[[5, 70, 150], 0] = 2.0  # three clear winners, then 197 exact ties across shards
    store = make_store(tmp_path / "s", x, shard_size=32)
    q = np.eye(8, dtype=np.float32)[:1]
    for br in (None, 5, 50):
        s, i = exact_topk(store, q, 6, metric="dot", batch_rows=br)
        assert i[0].tolist() == [5, 70, 150, 0, 1, 2] and s[0].tolist() == [2, 2, 2, 1, 1, 1]
    s, i = exact_topk(store, q, 500, metric="cosine")  # k > rows: every row, ordered
    assert i.shape == (1, 200) and i[0, :4].tolist() == [0, 1, 2, 3]


def test_search_errors(tmp_path):
    store = make_store(tmp_path / "s", np.ones((10, 4), np.float32))
    with pytest.raises(DatablameError, match="dim 4.*same model"):
        exact_topk(store, np.ones((1, 5), np.float32), 3, metric="dot")
    with pytest.raises(DatablameError, match="all-zero"):
        exact_topk(store, np.zeros(4, np.float32), 3, metric="cosine")
    with pytest.raises(DatablameError, match="unknown metric"):
        exact_topk(store, np.ones(4, np.float32), 3, metric="l2")
    with pytest.raises(DatablameError, match="no feature store"):
        exact_topk(tmp_path / "missing", np.ones(4, np.float32), 3, metric="dot")


def clustered(n: int, dim: int, n_clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 3
    return (centers[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_faiss_flat_is_exact(tmp_path, metric):
    x = clustered(1500, 32, 20)
    store = make_store(tmp_path / "s", x, shard_size=400)
    index = build_faiss_index(store, "flat", metric=metric, recall_queries=50)
    assert index.info["recall_at_10"] == 1.0
    q = clustered(20, 32, 20, seed=5)
    assert recall_at_k_vs_exact(index, store, q, 10) == 1.0
    s, i = index.search(q, 10)
    es, ei = exact_topk(store, q, 10, metric=metric)
    np.testing.assert_allclose(s, es, rtol=1e-4, atol=1e-4)


def test_faiss_ivf_recall_save_load(tmp_path):
    x = clustered(3000, 32, 30)
    store = make_store(tmp_path / "s", x, shard_size=1000)
    q = clustered(40, 32, 30, seed=7)
    index = build_faiss_index(store, "ivf", metric="cosine", recall_queries=q, target_recall=0.95)
    info = index.info
    assert info["nlist"] == 3000 // 39 and info["recall_at_10"] >= 0.95 and info["store_identity"] == IDENT
    again = build_faiss_index(store, "ivf", metric="cosine", recall_queries=q, target_recall=0.95)
    np.testing.assert_array_equal(again.search(q, 10)[1], index.search(q, 10)[1])  # seeded k-means
    path = index.save(tmp_path / "idx" / "ivf.faiss")
    loaded = load_faiss_index(path, expect_store=store)
    assert loaded.nprobe == index.nprobe and loaded.kind == "ivf"
    np.testing.assert_array_equal(loaded.search(q, 10)[1], index.search(q, 10)[1])
    pq = build_faiss_index(x, "ivfpq", metric="dot", nlist=8, m_pq=16, nprobe=8, recall_queries=q)
    assert pq.info["m_pq"] == 16 and pq.info["recall_at_10"] > 0.5  # lossy codes, but measured
    with pytest.raises(DatablameError, match="no FAISS index"):
        load_faiss_index(tmp_path / "nope.faiss")
    build_store(tmp_path / "s", n_rows=1, row_ids=["extra"], identity=IDENT, featurize=lambda s, e: x[:1], dim=32,
                progress=False, overwrite=True)
    with pytest.raises(DatablameError, match="covers 3000 rows but the store has 1"):
        load_faiss_index(path, expect_store=open_store(tmp_path / "s"))
