"""`datablame bench`: a tiny end-to-end run (2 fast methods + bergson) and the peer plumbing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datablame.bench.peers import PEERS, Peer, register_peer, run_peer
from datablame.errors import DatablameError


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    from typer.testing import CliRunner

    from datablame.cli import app

    tmp = tmp_path_factory.mktemp("bench")
    args = ["bench", "hops", "--size", "small", "--methods", "grad_cosine,grad_dot", "--peers", "bergson",
            "--out", str(tmp / "run"), "--results-dir", str(tmp / "results"), "--results-name", "bench_small_hops", "--bootstrap", "300"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return tmp, res.output, json.loads((tmp / "run" / "bench" / "bench.json").read_text())


def test_bench_json_schema(small_bench):
    _, output, bench = small_bench
    assert bench["benchmark"] == "hops" and bench["corpus"]["rows"] == 60 and bench["corpus"]["queries"] == 6
    assert set(bench["methods"]) == {"grad_cosine", "grad_dot", "bergson (peer)"}
    le = bench["logit_eval"]
    assert le["n"] == 6 and set(le["by_group"]) == {"depth 0", "depth 1"}
    assert len(bench["queries"]["learned"]) + len(bench["queries"]["not_learned"]) == 6
    assert bench["queries"]["learned"], "the small preset should learn some functions"
    for name, e in bench["methods"].items():
        assert not e.get("error"), (name, e.get("error"))
        assert e["seconds"] > 0 and e["peak_bytes"] is not None
        assert set(e["metrics"]) == {"learned", "not_learned", "all"}
        m = e["metrics"]["all"]
        assert set(m) == {"recall@1", "recall@5", "recall@10", "precision@1", "precision@5", "precision@10",
                          "mrr", "ap", "roc_auc"}
        for v in m.values():
            assert 0.0 <= v["ci_low"] <= v["mean"] <= v["ci_high"] <= 1.0
        assert set(e["per_query"]) == {q["query_id"] for q in le["per_query"]}
        assert len(e["curves"]["recall_at_k"]) == 60 and e["curves"]["recall_at_k"][-1] == pytest.approx(1.0)
    assert bench["methods"]["bergson (peer)"]["kind"] == "peer"
    assert bench["variants"]["indirect"]["queries"] == 3  # the depth-1 queries
    indirect = bench["methods"]["grad_dot"]["variants"].get("indirect")
    assert indirect is None or 0.0 <= indirect["ap"]["mean"] <= 1.0
    assert bench["methods"]["bergson (peer)"]["options"] == {}  # no preset options for bergson
    assert bench["best"]["ours"]["name"] in ("grad_cosine", "grad_dot")
    assert bench["best"]["peer"]["name"] == "bergson (peer)"
    assert bench["agreement"] and bench["agreement"][0]["ours"] == "grad_cosine"
    assert 0.0 <= bench["agreement"][0]["top10_jaccard_mean"] <= 1.0
    assert "logit evaluation" in output and "bench finished" in output


def test_metrics_follow_the_ground_truth(small_bench):
    """Gradient methods and bergson find the defining rows (a flipped sign would not)."""
    _, _, bench = small_bench
    for name in ("grad_cosine", "bergson (peer)"):
        m = bench["methods"][name]["metrics"]["all"]
        assert m["roc_auc"]["mean"] > 0.7 and m["ap"]["mean"] > 0.5, (name, m["ap"])
    rho = bench["agreement"][0]["spearman_mean"]
    assert rho > 0.5  # bergson's cosine and ours rank alike (different random projections)


def test_metrics_recompute_from_scores(small_bench):
    from datablame import api
    from datablame.config import parse_config
    from datablame.metrics import average_precision

    tmp, _, bench = small_bench
    scores = np.load(tmp / "run" / "bench" / "scores.npz")
    cfg = parse_config(bench["config"])
    corpus, queries, truth = api.load_corpus(cfg)
    idx = corpus.index_of()
    for qi, q in enumerate(queries):
        ap = average_precision(scores["grad_dot"][qi], [idx[r] for r in truth[q.query_id]])
        assert ap == pytest.approx(bench["methods"]["grad_dot"]["per_query"][q.query_id]["ap"])


def test_outputs_written(small_bench):
    tmp, _, bench = small_bench
    out = tmp / "run" / "bench"
    for f in ("bench.json", "bench.md", "readme_section.md", "pr.png", "recall_at_k.png", "scores.npz"):
        assert (out / f).stat().st_size > 0, f
    copies = ["bench_small_hops.json", "bench_small_hops.md", "bench_small_hops_pr.png",
              "bench_small_hops_recall_at_k.png"]  # named by --results-name
    assert sorted(p.name for p in (tmp / "results").iterdir()) == copies
    for f in copies:
        assert (tmp / "results" / f).stat().st_size > 0, f
    md = (tmp / "results" / "bench_small_hops.md").read_text()
    assert "| grad_cosine | ours |" in md and "bench_small_hops_pr.png" in md and "Logit evaluation" in md


def test_bench_reuses_the_trained_model(small_bench):
    from datablame.bench.runner import BenchOptions, bench_config, run_bench

    tmp, _, first = small_bench
    cfg = bench_config("hops", tmp / "run", size="small")
    again = run_bench(cfg, "hops", BenchOptions(methods=["grad_dot"], peers=["none"], n_boot=200))
    assert again["model"]["train_reused"] and again["model"]["fingerprint"] == first["model"]["fingerprint"]
    assert again["queries"] == first["queries"]
    m0, m1 = first["methods"]["grad_dot"]["per_query"], again["methods"]["grad_dot"]["per_query"]
    assert {q: v["ap"] for q, v in m0.items()} == pytest.approx({q: v["ap"] for q, v in m1.items()})


def test_unknown_method_and_peer_are_clear_errors():
    from datablame.bench.runner import resolve_methods, resolve_peers

    with pytest.raises(DatablameError, match="unknown method"):
        resolve_methods(["grad_cosine", "no_such_method"])
    with pytest.raises(DatablameError, match="unknown peer"):
        resolve_peers(["no_such_peer"])
    names, skipped = resolve_methods(None)
    assert "grad_cosine" in names and not set(skipped) & set(names)


def test_option_parsing():
    from datablame.cli_bench import _parse_options

    assert _parse_options(["ekfac.damping=0.001", "bergson.unit_normalize=false", "ekfac.x=[1, 2]"]) == {
        "ekfac": {"damping": 0.001, "x": [1, 2]}, "bergson": {"unit_normalize": False}}
    with pytest.raises(DatablameError, match="NAME.KEY=VALUE"):
        _parse_options(["damping=1"])


class _Broken(Peer):
    name = "_test_broken"
    library = "numpy"
    entry_point = "raises"

    def scores(self, inputs):
        inputs.model.train(True)
        inputs.model.requires_grad_(False)
        raise RuntimeError("boom")


def test_failing_peer_is_an_entry_not_an_exception(tiny_llama):
    from types import SimpleNamespace

    register_peer(_Broken)
    try:
        tiny_llama.eval()
        flags = [p.requires_grad for p in tiny_llama.parameters()]
        inputs = SimpleNamespace(model=tiny_llama, queries=[], corpus=[])
        res = run_peer("_test_broken", inputs)
        assert res.scores is None and res.error == "RuntimeError: boom" and "traceback" in res.info
        assert not tiny_llama.training and [p.requires_grad for p in tiny_llama.parameters()] == flags
    finally:
        PEERS.pop("_test_broken", None)


def test_kronfluence_adapter_reports_missing_method(monkeypatch):
    from datablame.bench.peers import kronfluence as adapter
    from datablame.methods import REGISTRY

    monkeypatch.delitem(REGISTRY, "kronfluence", raising=False)
    monkeypatch.setattr(adapter, "_ensure_registered", lambda: None)
    res = run_peer("kronfluence", inputs=None)  # never touches the inputs
    assert res.scores is None and res.error.startswith("not available")


def test_truth_variants(tmp_path):
    from datablame import api
    from datablame.bench.runner import bench_config, truth_variants

    cfg = bench_config("planted", tmp_path / "p", size="small")
    corpus, queries, truth = api.load_corpus(cfg)
    v = truth_variants(cfg, corpus, queries)["vs decoys"]["queries"]
    assert len(v) == len(queries)  # every planted and poison query has decoys
    for qi, (cands, rel) in v.items():
        kinds = [corpus[int(c)].metadata["kind"] for c in cands]
        assert sorted(corpus[int(cands[p])].row_id for p in rel) == sorted(truth[queries[qi].query_id])
        assert set(kinds) == ({"plant", "decoy"} if queries[qi].metadata["group"] == "planted" else {"poison", "true"})

    cfg = bench_config("hops", tmp_path / "h", size="small")
    corpus, queries, truth = api.load_corpus(cfg)
    v = truth_variants(cfg, corpus, queries)["indirect"]["queries"]
    assert {queries[qi].metadata["depth"] for qi in v} == {1}
    for qi, (cands, rel) in v.items():
        func = queries[qi].metadata["func"]
        assert all(corpus[int(c)].metadata["func"] != func for c in cands)  # own rows left out
        assert {corpus[int(cands[p])].metadata["func"] for p in rel} == set(queries[qi].metadata["chain"][1:])


def test_results_name_must_be_a_plain_stem(tmp_path):
    from typer.testing import CliRunner

    from datablame.cli import app

    res = CliRunner().invoke(app, ["bench", "hops", "--size", "small", "--out", str(tmp_path / "run"),
                                   "--results-dir", str(tmp_path), "--results-name", "../escape"])
    assert res.exit_code == 2 and "plain file stem" in res.output
    assert not (tmp_path / "run").exists()
