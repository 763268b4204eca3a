"""End-to-end pipeline on a small planted corpus, and the pipeline-level bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_config import small_config

from datablame import api
from datablame.config import QueryConfig
from datablame.errors import DatablameError


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = small_config(out)
    outcome = api.run(cfg)
    return cfg, outcome


def test_run_writes_results_with_fingerprints_and_full_rows(trained_run):
    cfg, outcome = trained_run
    res = json.loads((outcome.run_dir / "attribution" / "results.json").read_text())
    assert res["data"]["fingerprint"] == outcome.corpus.fingerprint()
    assert len(res["model"]["fingerprint"]) == 64
    assert res["config"]["attribution"]["top_k"] == 5
    q = res["queries"][0]
    rows = q["rankings"]["grad_cosine"]
    assert len(rows) == 5 and rows[0]["score"] >= rows[-1]["score"]
    by_id = {r.row_id: r for r in outcome.corpus}
    assert rows[0]["prompt"] == by_id[rows[0]["row_id"]].prompt
    assert (outcome.run_dir / "attribution" / "report.html").is_file()
    assert (outcome.run_dir / "config.resolved.yaml").is_file()
    assert list((outcome.run_dir / "model").glob("checkpoint-*")), "checkpoints are kept"
    assert "recall@5" in res["evaluation"]["per_method"]["grad_cosine"]


def test_attribute_again_reuses_model_and_is_deterministic(trained_run):
    cfg, outcome = trained_run
    first = np.load(outcome.run_dir / "attribution" / "scores.npz")["grad_cosine"]
    # a different batch size must not change the scores
    cfg2 = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"batch_size": 2})})
    api.attribute(cfg2)
    again = np.load(outcome.run_dir / "attribution" / "scores.npz")["grad_cosine"]
    np.testing.assert_allclose(first, again, rtol=1e-4, atol=1e-6)


def test_generated_completion_and_dot_method(trained_run, tmp_path):
    cfg, outcome = trained_run
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"prompt": outcome.corpus[0].prompt, "query_id": "gen"}) + "\n")
    cfg2 = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"queries_file": str(qfile), "max_new_tokens": 8})})
    result, _ = api.attribute(cfg2, methods=["grad_dot", "grad_cosine"])
    q = result.queries[0]
    assert q.generated and q.query_id == "gen"
    assert set(q.rankings) == {"grad_dot", "grad_cosine"}


def test_too_long_query_is_refused(trained_run):
    cfg, _ = trained_run
    long_prompt = "Question: " + "Vorland " * 400 + "\nAnswer:"
    cfg2 = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(
        update={"queries": [QueryConfig(prompt=long_prompt, completion=" x")]})})
    with pytest.raises(DatablameError, match="longer than the context"):
        api.attribute(cfg2)


def test_other_run_in_output_dir_is_refused_and_kept(trained_run):
    cfg, outcome = trained_run
    other = small_config(outcome.run_dir, training={"learning_rate": 1e-3})
    before = sorted(p.name for p in outcome.run_dir.iterdir())
    with pytest.raises(DatablameError, match="holds another run"):
        api.train(other)
    assert sorted(p.name for p in outcome.run_dir.iterdir()) == before


def test_missing_model_path_is_refused(tmp_path):
    cfg = small_config(tmp_path / "r", model={"kind": "hf", "name_or_path": str(tmp_path / "no-such-model")})
    with pytest.raises(DatablameError, match="does not exist"):
        api.train(cfg)


def test_results_say_whether_the_model_produces_each_completion_and_how_sure(trained_run):
    """Every query carries the model's behaviour on it and each method's confidence block;
    planted rows are marked; the Markdown and HTML views show both."""
    cfg, outcome = trained_run
    api.attribute(cfg, methods=["grad_cosine", "bm25"])  # the config's queries (earlier tests used others)
    res = json.loads((outcome.run_dir / "attribution" / "results.json").read_text())
    for q in res["queries"]:
        b = q["behaviour"]
        assert b["tokens"] > 0 and b["loss"] > 0 and 0.0 <= b["token_match"] <= 1.0
        assert b["produces"] == b["exact"] == (b["token_match"] == 1.0)
        assert (b["warning"] is None) == b["produces"] and (b["greedy"] is None) == b["produces"]
        assert b["base_loss"] is not None  # tiny runs save the model before fine-tuning
        conf = q["confidence"]["methods"]
        assert set(conf) == set(q["rankings"])
        for m, c in conf.items():
            assert c["gap_z"] is not None and c["strength"] in ("clear", "some", "weak")
            assert set(c["agreement"]) == set(conf) - {m}
    truth = api.load_corpus(cfg)[2]
    marked = [(q["query_id"], r["row_id"]) for q in res["queries"] for rows in q["rankings"].values()
              for r in rows if r["mark"] == "planted"]
    assert marked and all(rid in truth[qid] for qid, rid in marked)
    md = (outcome.run_dir / "attribution" / "results.md").read_text()
    html = (outcome.run_dir / "attribution" / "report.html").read_text()
    assert md.count("**How sure:**") == len(res["queries"]) and "completion loss" in md and "(planted)" in md
    assert "How sure" in html and "greedy decoding" in html
    missed = [q for q in res["queries"] if not q["behaviour"]["produces"]]
    assert md.count("**Warning:** the model does not produce this completion") == len(missed)
    assert html.count("class='warn'") == len(missed)


def test_generated_completion_is_produced(trained_run, tmp_path):
    """A completion the model generated itself is, by construction, what it produces."""
    cfg, outcome = trained_run
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"prompt": outcome.corpus[1].prompt, "query_id": "gen"}) + "\n")
    cfg2 = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(
        update={"queries_file": str(qfile), "max_new_tokens": 6})})
    result, _ = api.attribute(cfg2, methods=["grad_cosine"])
    b = result.queries[0].behaviour
    assert result.queries[0].generated and b["token_match"] == 1.0 and b["produces"]
