"""The retrieval cascade: stage sizes, filtering, gradient re-rank order, recall report,
saved text indices and their refusal when built from another corpus."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.config import RetrievalConfig
from datablame.data.corpus import Corpus, Query, Row
from datablame.errors import DatablameError
from datablame.methods import get_method
from datablame.retrieval import (
    GradientReranker,
    build_text_indices,
    load_text_indices,
    run_cascade,
    run_cascade_for_inputs,
    text_index_dir,
)


def cfg(**kw) -> RetrievalConfig:
    base = {"embedding_k": None, "bm25_k": None}
    return RetrievalConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def planted(planted_run):
    """(make_inputs, exhaustive grad_cosine scores, text indices, the inputs whose cache holds
    the full gradient features), computed once."""
    _, make_inputs, truth = planted_run
    ref_inputs = make_inputs()
    full = get_method("grad_cosine").score(ref_inputs)
    indices = build_text_indices(ref_inputs.corpus, None, progress=False)
    return make_inputs, full, indices, ref_inputs


def test_stage_sizes_and_rerank_order_match_exhaustive(planted):
    make_inputs, full, indices, _ = planted
    inputs = make_inputs()  # empty cache: the reranker must featurize the candidates itself
    rerank = GradientReranker(inputs)
    res = run_cascade(inputs.corpus, inputs.queries, cfg(embedding_k=30, bm25_k=12), indices, rerank,
                      final_k=5, progress=False)
    n = len(inputs.corpus)
    union = set()
    for q in res.queries:
        sizes = [(s.name, s.candidates_in, s.candidates_out) for s in q.stages]
        assert sizes == [("embedding", n, 30), ("bm25", 30, 12), ("rerank", 12, 5)]
        assert set(q.survivors["bm25"]) <= set(q.survivors["embedding"])
        assert len(q.rows) == 5 and np.array_equal(q.rows, q.reranked_rows[:5])
        # re-rank order = the exhaustive gradient ranking restricted to the candidates
        cands = q.reranked_rows
        expected = cands[np.argsort(-full[q.query_index, cands], kind="stable")]
        assert np.array_equal(cands, expected)
        np.testing.assert_allclose(q.reranked_scores, full[q.query_index, cands], rtol=1e-4, atol=1e-5)
        assert all(s.seconds >= 0 and s.recall is None for s in q.stages)
        union |= set(cands.tolist())
    assert rerank.rows_featurized == len(union) < n  # only candidates, each once
    dense = res.score_matrix()
    assert dense.shape == (len(inputs.queries), n) and np.isinf(dense).sum(1).tolist() == [n - 12] * len(res.queries)


def test_reranker_reads_rows_from_an_attached_feature_store(planted, tmp_path):
    from datablame.features.gradients import gradient_features
    from datablame.store import build_store, open_store

    make_inputs, full, _, ref_inputs = planted
    inputs = make_inputs()
    rows_full = gradient_features(ref_inputs).rows  # cached by the fixture
    build_store(tmp_path / "store", n_rows=len(inputs.corpus), row_ids=inputs.corpus.row_ids, identity={"test": 1},
                featurize=lambda a, b: rows_full[a:b], dim=rows_full.shape[1], shard_size=25, progress=False)
    inputs.store = open_store(tmp_path / "store")
    rerank = GradientReranker(inputs)
    rows = np.array([40, 3, 27, len(inputs.corpus) - 1, 0, 26])  # across several shards, out of order
    np.testing.assert_allclose(rerank(1, rows), full[1, rows], atol=2e-3)
    assert rerank.rows_featurized == 0


def test_filter_excludes_rows_in_every_stage(planted):
    make_inputs, full, indices, _ = planted
    inputs = make_inputs()
    kinds = np.array([r.metadata["kind"] for r in inputs.corpus])
    decoys = set(np.flatnonzero(kinds == "decoy").tolist())
    assert decoys
    res = run_cascade(inputs.corpus, inputs.queries, cfg(filter="kind != 'decoy'", embedding_k=25, bm25_k=10),
                      indices, lambda qi, rows: full[qi, rows], final_k=4, progress=False)
    n = len(inputs.corpus)
    for q in res.queries:
        assert (q.stages[0].name, q.stages[0].candidates_in, q.stages[0].candidates_out) == ("filter", n, n - len(decoys))
        for rows in q.survivors.values():
            assert not decoys & set(rows.tolist())
        assert [s.candidates_out for s in q.stages] == [n - len(decoys), 25, 10, 4]
    with pytest.raises(DatablameError, match="keeps no row"):
        run_cascade(inputs.corpus, inputs.queries, cfg(filter="kind == 'nothing'"), progress=False)
    with pytest.raises(DatablameError, match="which no row has"):
        run_cascade(inputs.corpus, inputs.queries, cfg(filter="knd == 'plant'"), progress=False)


def toy() -> tuple[Corpus, list[Query], np.ndarray]:
    """12 rows: 0-7 in group a, 8-11 in b; rows 0-3 say 'apple'. Reference top-4: 0, 5, 9, 10."""
    rows = [Row(f"r{i}", f"Q{i}: ", ("apple tart" if i < 4 else "pear cake") + f" number{i}",
                {"group": "a" if i < 8 else "b"}) for i in range(12)]
    ref = np.linspace(0.0, 0.1, 12)[None, :].copy()
    ref[0, [0, 5, 9, 10]] = [0.9, 0.8, 0.7, 0.6]
    return Corpus(rows), [Query("apple? ", "apple", "q")], ref


@pytest.mark.parametrize("given_reference", [True, False])
def test_recall_report_on_a_computable_case(given_reference):
    corpus, queries, ref = toy()
    rerank = lambda qi, rows: ref[qi, rows]  # noqa: E731
    res = run_cascade(corpus, queries, cfg(filter="group == 'a'", bm25_k=4), None, rerank, final_k=2,
                      evaluate=True, reference_scores=ref if given_reference else None, recall_k=4, progress=False)
    q = res.queries[0]
    assert q.reference_top.tolist() == [0, 5, 9, 10]
    # filter keeps 0-7 (0 and 5 of the top-4); BM25 keeps the apple rows 0-3 (0);
    # the re-rank's top-2 of those is [0, 3] (row 3 has the highest background score)
    assert q.survivors["filter"].tolist() == list(range(8))
    assert sorted(q.survivors["bm25"].tolist()) == [0, 1, 2, 3]
    assert q.rows.tolist() == [0, 3]
    assert [(s.name, s.recall) for s in q.stages] == [("filter", 0.5), ("bm25", 0.25), ("rerank", 0.25)]
    summary = {s["stage"]: s for s in res.stage_summary()}
    assert summary["bm25"]["recall"] == 0.25 and summary["filter"]["candidates_out"] == 8
    assert res.recall_k == 4 and (res.reference_seconds is None) == given_reference
    d = res.to_dict(corpus.row_ids)
    assert d["queries"][0]["row_ids"] == ["r0", "r3"] and d["config"]["final_k"] == 2


def test_without_text_stages_the_cascade_is_exhaustive(planted_run):
    """No narrowing: the re-rank sees every row, so its top-k is the exhaustive top-k."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    inputs.attribution = inputs.attribution.model_copy(update={"retrieval": cfg()})
    full = get_method("grad_cosine").score(inputs)  # caches the features: the reranker reuses them
    res = run_cascade_for_inputs(inputs, evaluate=True, progress=False)
    assert res.final_k == inputs.attribution.top_k
    for q in res.queries:
        assert [s.name for s in q.stages] == ["rerank"] and q.stages[0].recall == 1.0
        np.testing.assert_allclose(q.scores, np.sort(full[q.query_index])[::-1][: res.final_k], rtol=1e-9)


def test_saved_indices_roundtrip_and_reuse(tmp_path):
    corpus, queries, _ = toy()
    out = text_index_dir(tmp_path)
    built = build_text_indices(corpus, out, bm25=True, embedding=True, progress=False)
    assert (out / "manifest.json").is_file() and built.path == out
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    loaded = load_text_indices(out, corpus)
    texts = ["apple tart", "pear"]
    np.testing.assert_array_equal(loaded.bm25.scores(texts), built.bm25.scores(texts))
    np.testing.assert_array_equal(loaded.embedding.vectors(), built.embedding.vectors())
    np.testing.assert_allclose(np.linalg.norm(loaded.embedding.vectors(), axis=1), 1.0, rtol=1e-5)
    s, rows = loaded.embedding.search(loaded.embedding.embed_queries(["pear cake number9"]), 3, np.arange(8, 12))
    assert rows[0, 0] == 9 and set(rows[0].tolist()) <= {8, 9, 10, 11}
    again = build_text_indices(corpus, out, progress=False)  # same corpus: reused, not rebuilt
    assert again.manifest["build_seconds"] == built.manifest["build_seconds"]


def test_mismatched_index_is_refused(tmp_path):
    corpus, queries, ref = toy()
    out = tmp_path / "text"
    build_text_indices(corpus, out, embedding=False, progress=False)
    other = Corpus(corpus.rows[:-1])
    with pytest.raises(DatablameError, match="built from another corpus") as err:
        load_text_indices(out, other)
    assert "datablame index" in err.value.fix
    indices = load_text_indices(out, corpus, embedding=False)
    with pytest.raises(DatablameError, match="built from another corpus"):
        run_cascade(other, queries, cfg(bm25_k=3), indices, progress=False)
    with pytest.raises(DatablameError, match="no embedding index"):
        run_cascade(corpus, queries, cfg(embedding_k=3), indices, progress=False)
    with pytest.raises(DatablameError, match="no embedding index"):
        load_text_indices(out, corpus)
    with pytest.raises(DatablameError, match="no text indices"):
        load_text_indices(tmp_path / "missing", corpus)


def test_bad_sizes_and_missing_reference_are_refused():
    corpus, queries, _ = toy()
    with pytest.raises(DatablameError, match="positive number of rows"):
        run_cascade(corpus, queries, RetrievalConfig.model_construct(**{**cfg().model_dump(), "bm25_k": 0}),
                    progress=False)  # the config refuses 0 itself; the function checks too
    with pytest.raises(DatablameError, match="needs reference scores or a re-rank"):
        run_cascade(corpus, queries, cfg(bm25_k=3), evaluate=True, progress=False)
    with pytest.raises(DatablameError, match="has no completion"):
        run_cascade(corpus, [Query("apple?", None, "g")], cfg(bm25_k=3), progress=False)
