"""The `fused` method: reciprocal-rank fusion of its components, with per-row evidence."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import QUERIES, tiny_inputs

from datablame.errors import DatablameError
from datablame.features.fusion import ranks_desc, reciprocal_rank_fusion
from datablame.methods import get_method, run_method


def test_fused_equals_rrf_of_its_components_and_explains_each_row():
    ctx = tiny_inputs()
    run = run_method(ctx, "fused", {"methods": ["bm25", "random"]})
    bm25, rnd = run_method(ctx, "bm25").scores, run_method(ctx, "random").scores
    for qi in range(len(QUERIES)):
        want = reciprocal_rank_fusion({"bm25": ranks_desc(bm25[qi]), "random": ranks_desc(rnd[qi])})
        np.testing.assert_allclose(run.scores[qi], want)
    # the component scores were computed once and shared
    assert {k[0] for k in ctx.shared.method_scores} == {"bm25", "random"}
    ev = run.method.evidence(ctx, 0, [QUERIES[0][2], 1])
    target = ev[0]
    assert target["ranks"]["bm25"] == 1 and "bm25" in target["found_by"]
    # a lexical component found it, so the words it shares with the query are given (None: no 2-word run)
    assert "shared_span" in target and "shared_span" not in ev[1] or "bm25" in ev[1]["found_by"]
    assert run.method.describe()["components"] == "bm25, random"


@pytest.mark.parametrize("options, needle", [
    ({"methods": ["fused"]}, "cannot be fused"),
    ({"methods": ["nope"]}, "cannot be fused"),
    ({"methods": ["bm25"], "weights": {"grad_cosine": 2}}, "not among its methods"),
])
def test_bad_components_are_refused(options, needle):
    with pytest.raises(DatablameError, match=needle):
        get_method("fused", options)


def test_fused_in_attribute_writes_evidence(planted_run, tmp_path):
    """Through the API on the planted run: results carry each fused row's evidence and the
    fused top-10 recalls the planted rows at least as well as its weaker component."""
    from datablame import api

    cfg, _, truth = planted_run
    out = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(tmp_path / "run")})})
    import shutil

    shutil.copytree(cfg.output.dir, out.output.dir)
    opts = {**cfg.attribution.options, "fused": {"methods": ["bm25", "grad_cosine"]}}
    out = out.model_copy(update={"attribution": out.attribution.model_copy(update={"options": opts, "top_k": 10})})
    result, paths = api.attribute(out, methods=["fused", "bm25", "grad_cosine"])
    for q in result.queries:
        rows = q.rankings["fused"]
        assert all(r.evidence and set(r.evidence["ranks"]) == {"bm25", "grad_cosine"} for r in rows)
        assert all(r.evidence is None for r in q.rankings["bm25"])
    per = result.evaluation["per_method"]
    assert per["fused"]["recall@10"] >= min(per["bm25"]["recall@10"], per["grad_cosine"]["recall@10"])
    assert "found by" in paths["markdown"].read_text()
