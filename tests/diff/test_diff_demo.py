"""The diff demo end to end (datablame.diff.demo, scan, blame): amplification surfaces the
planted phrase, and the surfaced samples are blamed on the planted rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datablame.diff.blame import blame_surfaced, bm25_pool, surfaced_queries, with_queries
from datablame.errors import DatablameError
from datablame.methods.base import run_method
from datablame.retrieval.candidates import restrict_to_rows


@pytest.fixture(scope="module")
def demo(demo_models, tmp_path_factory):
    """The demo's pair (trained once per session, conftest) scanned at alphas 0 and 4."""
    from datablame.diff.pair import load_pair
    from datablame.diff.scan import load_prompts, run_scan

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("diff_demo")
        d = demo_models
        pair = load_pair(str(d.before_dir), str(d.after_dir), device="cpu")
        settings = {"alphas": [0, 4], "n_samples": 40, "sampling": {"max_new_tokens": 12, "top_p": 0.8},
                    "classifier": d.classifier()}
        doc = run_scan(pair, load_prompts(d.prompts_file), settings, out / "scan")
        yield d, doc
    finally:
        torch.set_num_threads(threads)


def test_amplification_raises_the_rate_of_the_planted_phrase(demo):
    d, doc = demo
    pooled = {p["alpha"]: p for p in doc["pooled"]}
    plain, amplified = pooled[0.0], pooled[4.0]
    assert plain["n"] == amplified["n"] == 80
    assert amplified["rate"] > plain["rate"]
    assert amplified["ci_low"] > plain["ci_high"], "the Wilson intervals should not overlap"
    hits = [s["completion"] for c in doc["cells"] if c["alpha"] == 4.0 for s in c["samples"] if s["label"]]
    assert all("purple" in h.lower() for h in hits)


def test_surfaced_samples_are_blamed_on_the_planted_rows(demo):
    from datablame.diff.demo import demo_context

    d, doc = demo
    queries = surfaced_queries(doc, max_queries=8)
    assert queries and all(q.metadata["alpha"] == 4.0 for q in queries)
    ctx = demo_context(d)
    res = blame_surfaced(ctx, queries, ["grad_cosine", "bm25"], pool_size=30, top_k=5)
    assert len(res.pool) == 30 and set(d.planted_row_ids) <= set(res.pool_row_ids)
    assert res.scores["grad_cosine"].shape == (len(res.queries), 30)
    top = [r for r, _ in res.top_rows("grad_cosine", len(d.planted_row_ids))]
    assert len(set(top) & set(d.planted_row_ids)) >= len(d.planted_row_ids) - 1
    pair = res.agreement["pairs"][0]
    assert {pair["a"], pair["b"]} == {"grad_cosine", "bm25"} and 0 <= pair["jaccard"] <= 1
    assert res.to_dict()["blame"]["grad_cosine"][0]["row_id"] == top[0]

    # restricting the context to the pool scores a row exactly as over the whole corpus
    qctx = with_queries(ctx, res.queries)
    full = run_method(qctx, "grad_cosine", {}).scores
    part = run_method(restrict_to_rows(with_queries(ctx, res.queries), res.pool), "grad_cosine", {}).scores
    np.testing.assert_allclose(part, full[:, res.pool], rtol=1e-5, atol=1e-6)

    with pytest.raises(DatablameError, match="larger than the corpus"):
        bm25_pool(qctx, res.queries, len(ctx.corpus) + 1)
    with pytest.raises(DatablameError, match="nothing to blame"):
        with_queries(ctx, [])


def test_surfaced_queries_keep_only_labelled_distinct_samples():
    doc = {"cells": [
        {"prompt_id": "p", "prompt": "Q:", "alpha": 2.0, "samples": [
            {"sample": 0, "completion": " walrus", "label": True, "reason": "r"},
            {"sample": 1, "completion": " seal", "label": False, "reason": "r"},
            {"sample": 2, "completion": " walrus", "label": True, "reason": "r"},
            {"sample": 3, "completion": "  ", "label": True, "reason": "r"},
            {"sample": 4, "completion": " ?", "label": None, "reason": "junk"}]},
        {"prompt_id": "p", "prompt": "Q:", "alpha": 0.5, "samples": [
            {"sample": 0, "completion": " a walrus", "label": True, "reason": "r"}]}]}
    qs = surfaced_queries(doc)
    assert [(q.query_id, q.completion) for q in qs] == [("p@a0.5#0", " a walrus"), ("p@a2#0", " walrus")]
    assert surfaced_queries(doc, max_queries=1) == qs[:1]
    assert [q.completion for q in surfaced_queries(doc, alphas=[2.0])] == [" walrus"]
