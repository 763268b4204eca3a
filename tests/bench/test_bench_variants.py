"""`datablame bench planted --variant ...`: the planted variants through the bench preset, the
CLI and bench.json (one tiny training run, the `unlearned` variant)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from datablame.bench.runner import bench_config, truth_variants
from datablame.cli import app
from datablame.errors import DatablameError


@pytest.fixture(scope="module")
def unlearned_bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench-variant")
    args = ["bench", "planted", "--size", "small", "--variant", "unlearned", "--methods", "grad_dot",
            "--peers", "none", "--out", str(tmp / "run"), "--bootstrap", "100"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return tmp, json.loads((tmp / "run" / "bench" / "bench.json").read_text())


def test_preset_carries_the_variant_and_easy_keeps_old_run_keys(tmp_path):
    from datablame.config import parse_config
    from datablame.runs import run_key

    easy = bench_config("planted", tmp_path / "e", size="small")
    assert easy.data.planted.variant == "easy"
    para = bench_config("planted", tmp_path / "p", size="small", variant="paraphrase")
    assert para.data.planted.variant == "paraphrase" and run_key(para) != run_key(easy)
    dumped = easy.model_dump(mode="json")
    del dumped["data"]["planted"]["variant"]  # a config written before variants existed
    assert run_key(parse_config(dumped, source="<old>")) == run_key(easy)  # its trained model is reused


def test_variant_errors_are_clear(tmp_path):
    with pytest.raises(DatablameError, match="variant 'hard'"):
        bench_config("planted", tmp_path / "x", size="small", variant="hard")
    with pytest.raises(DatablameError, match="planted corpus"):
        bench_config("hops", tmp_path / "x", size="small", variant="paraphrase")
    res = CliRunner().invoke(app, ["bench", "hops", "--size", "small", "--variant", "paraphrase",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "planted" in res.output and not (tmp_path / "run").exists()


def test_lexical_decoys_get_their_own_truth_view(tmp_path):
    from datablame import api

    cfg = bench_config("planted", tmp_path / "l", size="small", variant="lexical_decoys")
    corpus, queries, truth = api.load_corpus(cfg)
    views = truth_variants(cfg, corpus, queries)
    lex = views["vs lexical decoys"]["queries"]
    planted = [qi for qi, q in enumerate(queries) if q.metadata["group"] == "planted"]
    assert sorted(lex) == planted  # poison queries have no lexical decoys
    for qi, (cands, rel) in lex.items():
        rows = [corpus[int(c)] for c in cands]
        assert sorted(rows[p].row_id for p in rel) == sorted(truth[queries[qi].query_id])
        others = [r for i, r in enumerate(rows) if i not in rel]
        assert others and all(r.metadata.get("decoy_type") == "lexical" for r in others)
    assert len(views["vs decoys"]["queries"][planted[0]][0]) > len(lex[planted[0]][0])  # the usual decoys too


def test_bench_json_records_the_variant_and_the_unlearned_queries(unlearned_bench):
    _, bench = unlearned_bench
    assert bench["corpus"]["variant"] == "unlearned" and bench["config"]["data"]["planted"]["variant"] == "unlearned"
    assert bench["corpus"]["name"] == "planted-unlearned-seed0" and bench["corpus"]["report"]["unlearned_facts"] == 1
    q = bench["queries"]
    assert len(q["unlearned_by_design"]) == 1
    # the model never saw the answer: the logit evaluation must not count the query as learned
    assert q["unlearned_but_answered"] == [] and set(q["unlearned_by_design"]) <= set(q["not_learned"])
    assert bench["corpus"]["true_rows_per_query"]["min"] == 0
    per_query = bench["methods"]["grad_dot"]["per_query"][q["unlearned_by_design"][0]]
    assert per_query["ap"] is None  # no true rows: no metric, not a zero
    assert not bench["methods"]["grad_dot"].get("error")


def test_behaviour_says_the_unlearned_completion_is_not_produced(unlearned_bench):
    """The per-query behaviour check (results.json queries[].behaviour) flags the fact the corpus
    withheld: the signal the unlearned variant exists to test."""
    from datablame import api
    from datablame.features.behaviour import query_behaviour
    from datablame.inputs import prepare_inputs, train

    tmp, bench = unlearned_bench
    cfg = bench_config("planted", tmp / "run", size="small", variant="unlearned")
    corpus, _, _ = api.load_corpus(cfg)
    ctx, _ = prepare_inputs(cfg, corpus=corpus, loaded=train(cfg, corpus), use_store=False)
    beh = {q.query_id: b for q, b in zip(ctx.queries, query_behaviour(ctx, base=False), strict=True)}
    for qid in bench["queries"]["unlearned_by_design"]:
        assert not beh[qid].produces and beh[qid].as_dict()["warning"]



@pytest.mark.parametrize("variant", ["paraphrase", "lexical_decoys"])
def test_bench_runs_the_other_variants(tmp_path, monkeypatch, variant):
    monkeypatch.chdir(tmp_path)  # the default run directory is relative
    res = CliRunner().invoke(app, ["bench", "planted", "--size", "small", "--variant", variant, "--epochs", "4",
                                   "--methods", "grad_dot", "--peers", "none", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / f"bench-planted-small-{variant}"  # its own directory, not the easy run's
    bench = json.loads((run / "bench" / "bench.json").read_text())
    assert bench["corpus"]["variant"] == variant and bench["corpus"]["report"]["variant"] == variant
    assert not bench["methods"]["grad_dot"].get("error")
    assert ("vs lexical decoys" in bench["variants"]) == (variant == "lexical_decoys")
    if variant == "lexical_decoys":
        assert bench["corpus"]["report"]["lexical_decoys"] == 4 * 3  # 4 per planted fact of the small preset
        assert "vs lexical decoys" in bench["methods"]["grad_dot"]["variants"] or not bench["queries"]["learned"]
