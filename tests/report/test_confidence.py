"""How sure a ranking is: separation of the top rows, agreement between methods, planted /
decoy marks, and the run's verify / LDS figures attached to each query."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datablame.data.corpus import Corpus, Query, Row
from datablame.layout import RunLayout
from datablame.report import build_result
from datablame.report.confidence import add_confidence, attach_checks, confidence_line
from datablame.report.render import print_table, render_html, render_markdown


def _result(scores: dict[str, np.ndarray], k: int = 2):
    corpus = Corpus([Row(f"r{i}", f"p{i}", f"c{i}", {"kind": "decoy" if i == 5 else "plant"}) for i in range(8)])
    queries = [Query("qp", "qc", "q0")]
    return build_result(version="t", config={}, model_info={}, corpus=corpus, queries=queries, generated=[False],
                        scores=scores, methods=[{"name": m, "sign": "s", "unit": "u"} for m in scores], k=k)


def test_separation_agreement_and_marks():
    sharp = np.array([[10.0, 9.5, 0.1, 0.0, -0.1, 0.2, 0.0, 0.1]])  # two rows far above the rest
    flat = np.array([[0.30, 0.29, 0.31, 0.28, 0.30, 0.32, 0.29, 0.30]])  # no row stands out
    res = _result({"sharp": sharp, "flat": flat})
    add_confidence(res, {"sharp": sharp, "flat": flat}, 2, truth={"q0": ["r0", "r1"]})
    c = res.queries[0].confidence["methods"]
    assert c["sharp"]["strength"] == "clear" and c["sharp"]["gap_z"] > 2 * c["flat"]["gap_z"]
    assert c["flat"]["strength"] == "weak"
    med = np.median(sharp)
    np.testing.assert_allclose(c["sharp"]["top_z"], (10.0 - med) / (1.4826 * np.median(np.abs(sharp - med))))
    # flat's top 2 are r5, r2: no overlap with sharp's r0, r1
    assert c["sharp"]["agreement"]["flat"]["overlap"] == 0.0 == c["flat"]["mean_overlap"]
    marks = {r.row_id: r.mark for rows in res.queries[0].rankings.values() for r in rows}
    assert marks == {"r0": "planted", "r1": "planted", "r5": "decoy", "r2": None}
    line = confidence_line("sharp", c["sharp"])
    assert "clear" in line and "0% of its top rows" in line


@pytest.mark.parametrize("n", [50, 5000])
def test_noise_is_weak_whatever_the_corpus_size(n):
    """Scores of pure noise: the top-k gap is measured against what noise itself would reach."""
    rng = np.random.default_rng(n)
    gaps = []
    for _ in range(20):
        s = rng.normal(size=(1, n))
        res = _result_n(s, n)
        add_confidence(res, {"noise": s}, 10)
        gaps.append(res.queries[0].confidence["methods"]["noise"]["gap_z"])
    assert abs(np.mean(gaps)) < 0.5 and np.mean([g < 1.0 for g in gaps]) >= 0.9
    s = rng.normal(size=(1, n))
    s[0, :10] += 8.0  # ten rows truly stand out
    res = _result_n(s, n)
    add_confidence(res, {"signal": s}, 10)
    assert res.queries[0].confidence["methods"]["signal"]["strength"] == "clear"


def _result_n(s: np.ndarray, n: int):
    corpus = Corpus([Row(f"r{i}", "p", "c") for i in range(n)])
    return build_result(version="t", config={}, model_info={}, corpus=corpus, queries=[Query("p", "c", "q0")],
                        generated=[False], scores={"x": s}, methods=[], k=10)


def test_same_ranking_agrees_and_cascade_infinities_are_ignored():
    a = np.array([[3.0, 2.0, 1.0, 0.0, -np.inf, -np.inf]])
    b = np.array([[30.0, 20.0, 10.0, 0.0, -np.inf, -np.inf]])
    res = _result({"a": a, "b": b})
    add_confidence(res, {"a": a, "b": b}, 2)
    c = res.queries[0].confidence["methods"]
    assert c["a"]["rows_scored"] == 4 and np.isfinite(c["a"]["gap_z"])
    assert c["a"]["agreement"]["b"] == {"overlap": 1.0, "spearman": pytest.approx(1.0)}
    assert all(r.mark is None for rows in res.queries[0].rankings.values() for r in rows)  # no truth: no marks


def test_verify_and_lds_figures_are_attached(tmp_path):
    s = np.arange(8, dtype=float)[None, ::-1].copy()
    res = _result({"grad_dot": s, "bm25": s})
    add_confidence(res, {"grad_dot": s, "bm25": s}, 2)
    layout = RunLayout(tmp_path)
    assert not attach_checks(res, tmp_path)  # nothing ran yet
    layout.verify_dir.mkdir(parents=True)
    layout.verify_json().write_text(json.dumps({"strategy": "remove", "per_query": [
        {"method": "grad_dot", "k": 3, "query_id": "q0", "verdict": "confirmed", "p_value": 0.01,
         "effect": {"mean": 0.42, "low": 0.2, "high": 0.6, "n": 3}},
        {"method": "grad_dot", "k": 3, "query_id": "other", "verdict": "partial", "effect": {"mean": 0.1}}]}))
    layout.lds_dir.mkdir(parents=True)
    layout.lds_json.write_text(json.dumps({"table": [
        {"method": "bm25", "lds": 0.35, "ci_low": 0.2, "ci_high": 0.5, "per_query": {"q0": 0.61}},
        {"method": "grad_dot", "error": "failed"}]}))
    assert attach_checks(res, tmp_path)
    c = res.queries[0].confidence["methods"]
    (v,) = c["grad_dot"]["checks"]["verify"]
    assert v == {"strategy": "remove", "k": 3, "verdict": "confirmed", "effect": 0.42, "ci_low": 0.2,
                 "ci_high": 0.6, "p_value": 0.01}
    assert "lds" not in c["grad_dot"]["checks"] and c["bm25"]["checks"] == {
        "lds": {"query": 0.61, "mean": 0.35, "ci_low": 0.2, "ci_high": 0.5}}
    md, html = render_markdown(res), render_html(res)
    assert "verify k=3: confirmed (effect +0.42 nats/token, CI +0.2 to +0.6)" in md and "LDS 0.61 on this query" in html
    # a damaged file is skipped, not fatal
    layout.lds_json.write_text("{not json")
    assert attach_checks(res, tmp_path)


def test_console_warns_when_the_model_does_not_produce_the_completion(capsys):
    s = np.arange(8, dtype=float)[None, :]
    res = _result({"grad_dot": s})
    res.queries[0].behaviour = {"loss": 4.2, "token_match": 0.25, "exact": False, "tokens": 4, "greedy": "blue",
                                "base_loss": 4.5, "base_source": "b", "produces": False,
                                "warning": "the model does not produce this completion: x"}
    add_confidence(res, {"grad_dot": s}, 2)
    print_table(res)
    out = " ".join(capsys.readouterr().out.split())  # the console may wrap
    assert "warning" in out and "does not produce this completion" in out and "25% of 4 tokens" in out
    assert "how sure:" in out
    assert "**Warning:** the model does not produce this completion" in render_markdown(res)
