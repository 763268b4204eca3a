"""The cascade wired into the API/CLI: `datablame index` builds (and reuses) the text indices,
`datablame attribute` with attribution.retrieval.enabled ranks gradient methods over the
cascade's candidates and records each stage; sizes below final_k and non-gradient methods
are refused before any model is loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame import api
from datablame.cli import app
from datablame.errors import DatablameError

runner = CliRunner()
EXACT = ["grad_cosine", "grad_dot", "tracin", "ekfac"]  # re-rank, row-separable x2, corpus-wide


def with_retrieval(cfg, **retrieval):
    a = cfg.attribution
    return cfg.model_copy(update={"attribution": a.model_copy(update={
        "retrieval": a.retrieval.model_copy(update={"enabled": True, **retrieval})})})


def write_yaml(cfg, path):
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A trained planted run, indexed through the CLI, and its exhaustive scores."""
    tmp = tmp_path_factory.mktemp("cascade_cli")
    cfg = small_config(tmp / "run", training={"num_train_epochs": 6}, attribution={"methods": EXACT})
    api.train(cfg)
    res = runner.invoke(app, ["index", "--config", str(write_yaml(cfg, tmp / "run.yaml"))])
    assert res.exit_code == 0, res.output
    _, paths = api.attribute(cfg, progress=False)  # exhaustive (cascade off), rows from the store
    exhaustive = dict(np.load(paths["json"].parent / "scores.npz"))
    return cfg, tmp, res.output, exhaustive


def test_index_builds_and_then_reuses_the_text_indices(indexed):
    cfg, _, output, _ = indexed
    run = cfg.output.dir
    summary = json.loads((api.store_dir(api.prepare_run_dir(cfg)) / "index_summary.json").read_text())
    t = summary["text_indices"]
    assert t["path"] == f"{run}/index/text" and t["rows"] == summary["rows"] and not t["reused"]
    assert t["bm25"] and t["embedding_model"] == cfg.attribution.retrieval.embedding_model
    assert t["build_seconds"]["bm25"] > 0 and t["build_seconds"]["embedding"] > 0
    assert f"text indices {run}/index/text" in output and "built: BM25" in output
    again = api.index(cfg, faiss="none", progress=False)["text_indices"]
    assert again["reused"] and again["build_seconds"] == t["build_seconds"]
    skipped = api.index(cfg, faiss="none", progress=False, text_indices=False)
    assert "text_indices" not in skipped


def test_cascade_covering_every_row_gives_the_exhaustive_top_k(indexed):
    cfg, tmp, _, exhaustive = indexed
    n = len(api.load_corpus(cfg)[0])
    on = with_retrieval(cfg, embedding_k=n, bm25_k=n)
    res = runner.invoke(app, ["attribute", "--config", str(write_yaml(on, tmp / "all.yaml"))])
    assert res.exit_code == 0, res.output
    assert "retrieval cascade" in res.output and "recall@5" in res.output
    for stage in ("embedding", "bm25", "rerank"):
        assert any(line.startswith(stage) for line in res.output.splitlines())
    out = api.prepare_run_dir(cfg) / "attribution"
    data = json.loads((out / "results.json").read_text())
    r = data["retrieval"]
    assert [(s["stage"], s["candidates_in"], s["candidates_out"]) for s in r["stages"]] == [
        ("embedding", n, n), ("bm25", n, n), ("rerank", n, 5)]
    for s in r["stages"]:  # the store is attached, so recall of the exhaustive top-5 is reported
        assert s["recall"] == 1.0 and s["seconds_per_query"] >= 0
    assert r["recall_of"] == "exhaustive grad_cosine top-5" and r["final_k"] == 5
    assert set(r["method_scoring"]) == set(EXACT)
    cascade = dict(np.load(out / "scores.npz"))
    for name in EXACT:
        np.testing.assert_allclose(cascade[name], exhaustive[name], rtol=1e-5, atol=1e-8)
        for q in data["queries"]:
            assert len(q["rankings"][name]) == 5
    for qi, q in enumerate(r["queries"]):
        top = np.argsort(-exhaustive["grad_cosine"][qi], kind="stable")[:5]
        assert q["rows"] == top.tolist() and q["reference_top"] == top.tolist()


def test_narrow_cascade_ranks_only_candidates_with_their_exact_scores(indexed):
    cfg, _, _, exhaustive = indexed
    result, paths = api.attribute(with_retrieval(cfg, embedding_k=30, bm25_k=12), progress=False)
    scores = dict(np.load(paths["json"].parent / "scores.npz"))
    r = result.retrieval
    assert [(s["stage"], s["candidates_out"]) for s in r["stages"]] == [("embedding", 30), ("bm25", 12), ("rerank", 5)]
    assert r["method_scoring"]["grad_dot"].startswith("candidates only")
    assert r["method_scoring"]["ekfac"] == "all rows, restricted to the candidates"
    for qi, q in enumerate(r["queries"]):
        assert 0 <= q["stages"][-1]["recall"] <= 1
        cands = np.flatnonzero(np.isfinite(scores["grad_cosine"][qi]))
        assert len(cands) == 12
        for name in EXACT:  # same candidates for every method, exhaustive values there
            assert np.array_equal(np.flatnonzero(np.isfinite(scores[name][qi])), cands)
            np.testing.assert_allclose(scores[name][qi, cands], exhaustive[name][qi, cands], rtol=1e-5, atol=1e-8)
            ranked = [row.row_id for row in result.queries[qi].rankings[name]]
            ids = api.load_corpus(cfg)[0].row_ids
            assert len(ranked) == 5 and {ids.index(x) for x in ranked} <= set(cands.tolist())
    assert q["rows"] == [api.load_corpus(cfg)[0].row_ids.index(x) for x in q["row_ids"]]


def test_fused_is_the_cascades_fusion_stage(indexed):
    """`fused` with the cascade on ranks every row a stage found by reciprocal-rank fusion of
    the embedding, BM25 and gradient re-rank ranks (a row the embedding stage found but BM25
    dropped keeps its one vote); each blamed row shows those ranks."""
    from datablame.features.fusion import RRF_C, ranks_desc

    cfg, _, _, _ = indexed
    result, paths = api.attribute(with_retrieval(cfg, embedding_k=30, bm25_k=12), methods=["grad_cosine", "fused"],
                                  progress=False)
    scores = dict(np.load(paths["json"].parent / "scores.npz"))
    assert result.retrieval["method_scoring"]["fused"].startswith("fusion stage")
    ids = api.load_corpus(cfg)[0].row_ids
    for qi, q in enumerate(result.queries):
        cands = set(np.flatnonzero(np.isfinite(scores["grad_cosine"][qi])).tolist())
        found = set(np.flatnonzero(np.isfinite(scores["fused"][qi])).tolist())
        assert len(cands) == 12 and cands <= found and len(found) == 30  # every embedding survivor
        grad_rank = ranks_desc(scores["grad_cosine"][qi])
        for r in q.rankings["fused"]:
            ranks, i = r.evidence["ranks"], ids.index(r.row_id)
            assert set(ranks) == {"embedding_cosine", "bm25", "grad_cosine"}
            assert 1 <= ranks["embedding_cosine"] <= 30
            assert (ranks["bm25"] is None) == (ranks["grad_cosine"] is None) == (i not in cands)
            if i in cands:
                assert ranks["grad_cosine"] == grad_rank[i] and 1 <= ranks["bm25"] <= 12
            np.testing.assert_allclose(r.score, sum(1 / (RRF_C + k) for k in ranks.values() if k is not None))
    assert "found by" in paths["markdown"].read_text()


def test_too_small_stage_and_non_gradient_method_are_refused(indexed, tmp_path):
    cfg, _, _, _ = indexed
    with pytest.raises(DatablameError, match="bm25_k is 3, fewer rows than the 5") as err:
        api.attribute(with_retrieval(cfg, embedding_k=30, bm25_k=3))
    assert "raise attribution.retrieval.bm25_k to at least 5" in err.value.fix
    with pytest.raises(DatablameError, match="embedding_k is 4"):
        api.attribute(with_retrieval(cfg, embedding_k=4, bm25_k=None, final_k=4))  # top_k 5 still counts
    res = runner.invoke(app, ["attribute", "--config", str(write_yaml(with_retrieval(cfg), tmp_path / "r.yaml")),
                              "--method", "grad_cosine,bm25"])
    assert res.exit_code == 2 and "bm25 is not one" in res.output and "retrieval.enabled: false" in res.output


def test_learned_fusion_stage_weights_the_stage_votes_on_lds_records(indexed):
    """`fused` with `combine: learned` in the cascade weights each stage's reciprocal-rank vote
    1/(c + rank) (0 where the stage did not rank the row), z-scored over the rows, with weights
    fitted on the run's LDS subset records leaving the query out; without records it is one
    message naming `datablame lds` (never a silent fall-back to reciprocal-rank fusion)."""
    import base64
    import shutil

    from datablame.features.fusion import RRF_C
    from datablame.layout import RunLayout

    cfg, _, _, _ = indexed
    base = with_retrieval(cfg, embedding_k=30, bm25_k=12)
    learned = base.model_copy(update={"attribution": base.attribution.model_copy(
        update={"options": {"fused": {"combine": "learned"}}})})
    with pytest.raises(DatablameError) as err:
        api.attribute(learned, methods=["grad_cosine", "fused"], progress=False)
    assert "datablame lds --config" in err.value.fix
    rrf, rrf_paths = api.attribute(base, methods=["grad_cosine", "fused"], progress=False)
    found = np.isfinite(dict(np.load(rrf_paths["json"].parent / "scores.npz"))["fused"])
    corpus = api.load_corpus(cfg)[0]
    n, ids = len(corpus), [q.query_id for q in rrf.queries]
    rng = np.random.default_rng(0)
    jobs = RunLayout(cfg.output.dir).lds_jobs_dir
    jobs.mkdir(parents=True, exist_ok=True)
    try:
        for j in range(8):
            mask = rng.random(n) < 0.5
            (jobs / f"fake{j}.json").write_text(json.dumps({
                "kind": "lds-subset", "corpus": corpus.fingerprint(), "n_rows": n,
                "kept_mask": base64.b64encode(np.packbits(mask).tobytes()).decode(),
                "query_ids": ids, "loss": rng.normal(size=len(ids)).tolist(), "identity": {}}))
        result, paths = api.attribute(learned, methods=["grad_cosine", "fused"], progress=False)
    finally:
        shutil.rmtree(jobs)
    assert "weighted per query on 8 LDS subset models" in result.retrieval["method_scoring"]["fused"]
    assert np.array_equal(np.isfinite(dict(np.load(paths["json"].parent / "scores.npz"))["fused"]), found)
    kept = {"embedding_cosine": 30, "bm25": 12, "grad_cosine": 12}  # rows each stage ranks, 1..k

    def z(rank, k):  # the z-score over all n rows of one stage's vote for a row at `rank`
        votes = np.zeros(n)
        votes[:k] = 1 / (RRF_C + np.arange(1, k + 1))
        return ((1 / (RRF_C + rank) if rank else 0.0) - votes.mean()) / votes.std()

    for q in result.queries:
        for r in q.rankings["fused"]:
            w, ranks = r.evidence["weights"], r.evidence["ranks"]
            assert set(w) == set(kept) and abs(sum(w.values()) - 1) < 1e-9 and min(w.values()) >= 0
            want = sum(w[m] * z(ranks[m] or 0, k) for m, k in kept.items())
            np.testing.assert_allclose(r.score, want, rtol=1e-9, atol=1e-12)
