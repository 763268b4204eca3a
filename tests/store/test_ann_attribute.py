"""`attribution.store.search`: grad_cosine answered from a FAISS IVF index (candidates re-scored
exactly) ranks like exact streaming on a planted run, results.json records which path answered
each method and the measured recall@10; `exact` gives the streaming scores; `ann` without an
index is refused naming `datablame index`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_config import small_config

from datablame import api
from datablame.errors import DatablameError
from datablame.layout import RunLayout

METHODS = ["grad_cosine", "grad_dot", "bm25"]


def _cfg(out, **store):
    return small_config(out, attribution={"methods": METHODS, "top_k": 5, "batch_size": 7,
                                          "store": {"shard_rows": 16, **store}})


def _run(cfg):
    api.attribute(cfg, progress=False)
    layout = RunLayout(cfg.output.dir)
    scores = dict(np.load(layout.attribution_dir / "scores.npz"))
    return scores, json.loads(layout.results_json.read_text())


@pytest.fixture(scope="module")
def ivf_run(tmp_path_factory):
    """A trained planted run, its store, and a forced IVF index (4 lists, 2 probed)."""
    from datablame.store import build_faiss_index, open_store

    out = tmp_path_factory.mktemp("ann")
    cfg = _cfg(out)
    api.train(cfg)
    api.index(cfg, faiss="none", progress=False, text_indices=False)
    layout = RunLayout(out)
    store = open_store(layout.store_dir)
    build_faiss_index(store, "ivf", metric="cosine", nlist=4, nprobe=2).save(layout.faiss_index)
    exact, exact_res = _run(cfg)  # the default: exact streaming
    return out, exact, exact_res


def test_ann_path_recall_and_rescored_scores(ivf_run):
    out, exact, _ = ivf_run
    scores, res = _run(_cfg(out, search="ann", ann_candidates=12, nprobe=2))
    rep = res["data"]["store_search"]["methods"]
    cos = rep["grad_cosine"]
    assert cos["path"] == "ann" and cos["kind"] == "ivf" and cos["nprobe"] == 2 and cos["candidates"] == 12
    assert rep["grad_dot"]["path"] == "exact" and "cosine" in rep["grad_dot"]["reason"]  # index metric differs
    assert rep["bm25"]["path"] == "exact" and "dot product" in rep["bm25"]["reason"]
    ann, ex = scores["grad_cosine"], exact["grad_cosine"]
    finite = np.isfinite(ann)
    assert (finite.sum(axis=1) == 12).all(), "only the index's candidates are scored"
    np.testing.assert_allclose(ann[finite], ex[finite], rtol=1e-12, atol=1e-15)  # re-scored exactly
    np.testing.assert_array_equal(scores["grad_dot"], exact["grad_dot"])
    k = 10
    top = lambda m: np.argsort(-m, axis=1, kind="stable")[:, :k]  # noqa: E731
    recall = np.mean([len(set(a) & set(e)) / k for a, e in zip(top(ann).tolist(), top(ex).tolist(), strict=True)])
    assert recall >= 0.8
    assert cos["recall_at_10"] == pytest.approx(recall) and cos["recall_queries"] == len(ann)
    for q in res["queries"]:  # rankings list only rows the index proposed, with finite scores
        assert all(np.isfinite(r["score"]) for r in q["rankings"]["grad_cosine"])


def test_exact_forced_is_the_streaming_result(ivf_run):
    out, exact, exact_res = ivf_run
    scores, res = _run(_cfg(out, search="exact"))
    for name in METHODS:
        np.testing.assert_array_equal(scores[name], exact[name])
    assert {m["path"] for m in res["data"]["store_search"]["methods"].values()} == {"exact"}
    assert exact_res["data"]["store_search"]["methods"]["grad_cosine"]["path"] == "exact"


def test_auto_below_threshold_streams(ivf_run):
    out, exact, _ = ivf_run
    scores, res = _run(_cfg(out, search="auto"))  # 55 rows < ann_min_rows 50k
    np.testing.assert_array_equal(scores["grad_cosine"], exact["grad_cosine"])
    assert "ann_min_rows" in res["data"]["store_search"]["methods"]["grad_cosine"]["reason"]


def test_ann_without_index_names_datablame_index(ivf_run, monkeypatch):
    out, _, _ = ivf_run
    monkeypatch.setattr(RunLayout, "faiss_index", property(lambda self: self.store_dir / "absent.index"))
    with pytest.raises(DatablameError) as err:
        api.attribute(_cfg(out, search="ann"), progress=False)
    assert "no FAISS index" in err.value.problem and "datablame index" in err.value.fix


def test_grad_dot_searches_a_dot_index(ivf_run, monkeypatch):
    """With a dot-product index grad_dot takes the ANN path and grad_cosine streams; recall is
    not measured when ann_recall_queries is 0."""
    from datablame.store import build_faiss_index, open_store

    out, exact, _ = ivf_run
    layout = RunLayout(out)
    dot_index = layout.store_dir / "dot.index"
    build_faiss_index(open_store(layout.store_dir), "ivf", metric="dot", nlist=4, nprobe=4).save(dot_index)
    monkeypatch.setattr(RunLayout, "faiss_index", property(lambda self: self.store_dir / "dot.index"))
    scores, res = _run(_cfg(out, search="ann", ann_candidates=20, ann_recall_queries=0))
    rep = res["data"]["store_search"]["methods"]
    assert rep["grad_dot"]["path"] == "ann" and rep["grad_dot"]["recall_at_10"] is None
    assert rep["grad_dot"]["recall_queries"] == 0
    assert rep["grad_cosine"]["path"] == "exact"
    np.testing.assert_array_equal(scores["grad_cosine"], exact["grad_cosine"])
    ann, ex = scores["grad_dot"], exact["grad_dot"]
    # all 4 lists probed: the index is exact, so the top 10 equal exact streaming's
    top = lambda m: np.argsort(-m, axis=1, kind="stable")[:, :10]  # noqa: E731
    np.testing.assert_array_equal(top(ann), top(ex))
