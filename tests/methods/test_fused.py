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
    ({"methods": ["bm25"], "weights": {"bm25": 2}, "combine": "learned"}, "which fits them"),
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


def test_learned_combination_reads_the_runs_lds_records(tmp_path):
    """combine: learned weights each component's z-scores per query, fitted on the run's LDS
    subset records (matched by query id); without records it names `datablame lds`."""
    import base64
    import json
    from itertools import combinations

    from datablame.features.fusion_learned import zscore_rows
    from datablame.layout import RunLayout

    ctx = tiny_inputs(tmp_path)
    opts = {"methods": ["bm25", "random"], "combine": "learned"}
    with pytest.raises(DatablameError) as err:
        run_method(ctx, "fused", opts)
    assert "datablame lds --config" in err.value.fix
    bm25, rnd = run_method(ctx, "bm25").scores, run_method(ctx, "random").scores
    masks = np.array([[i in c for i in range(len(ctx.corpus))] for c in combinations(range(len(ctx.corpus)), 3)])
    losses = -(masks @ zscore_rows(bm25).T)  # the subset losses follow BM25
    jobs = RunLayout(tmp_path).lds_jobs_dir
    jobs.mkdir(parents=True)
    ids = [q.query_id for q in ctx.queries]
    for j, (mk, loss) in enumerate(zip(masks, losses, strict=True)):
        (jobs / f"j{j}.json").write_text(json.dumps({
            "kind": "lds-subset", "corpus": ctx.corpus.fingerprint(), "n_rows": len(ctx.corpus),
            "kept_mask": base64.b64encode(np.packbits(mk).tobytes()).decode(),
            "query_ids": ids[::-1], "loss": loss[::-1].tolist(), "identity": {}}))
    run = run_method(ctx, "fused", opts)
    w = run.method.fitted
    assert set(w) == set(ids)
    for qi, q in enumerate(ids):
        assert all(v >= 0 for v in w[q].values()) and abs(sum(w[q].values()) - 1) < 1e-9
        assert w[q]["bm25"] >= 0.8
        want = w[q]["bm25"] * zscore_rows(bm25)[qi] + w[q]["random"] * zscore_rows(rnd)[qi]
        np.testing.assert_allclose(run.scores[qi], want)
    ev = run.method.evidence(ctx, 1, [0, 3])
    assert ev[0]["weights"] == w[ids[1]] and set(ev[0]["ranks"]) == {"bm25", "random"}
    assert "learned" in run.method.describe()["combine"]
    # the default stays reciprocal-rank fusion
    assert run_method(ctx, "fused", {"methods": ["bm25", "random"]}).method.fitted == {}
