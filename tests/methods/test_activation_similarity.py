"""Activation similarity and its KMeans grouping (planted rows score above the rest)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.methods import get_method
from datablame.methods.activation_similarity import cluster_candidates


def test_planted_rows_score_higher_and_clusters_written(planted_run):
    cfg, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("activation_similarity", clusters=3, cluster_top=12, cluster_terms=4)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    assert np.all(np.abs(scores) <= 1 + 1e-9)
    gaps = planted_gaps(scores, inputs, truth)
    assert np.mean(gaps) > 0, gaps  # would fail with the sign flipped

    out = json.loads((inputs.work_dir / "activation_similarity" / "clusters.json").read_text())
    assert out["layer"] == 1 and len(out["queries"]) == len(inputs.queries)
    for qi, q in enumerate(out["queries"]):
        rows = [r for c in q["clusters"] for r in c["rows"]]
        top = np.argsort(-scores[qi], kind="stable")[:12]
        assert sorted(rows) == sorted(inputs.corpus[i].row_id for i in top)  # a partition of the top 12
        assert 1 <= len(q["clusters"]) <= 3 and all(c["top_terms"] for c in q["clusters"])
    np.testing.assert_array_equal(scores, get_method("activation_similarity").score(make_inputs()))  # deterministic


def test_options_change_the_vectors_and_bad_options_are_refused(planted_run):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    mean = get_method("activation_similarity", clusters=0, layer=0).score(inputs)
    last = get_method("activation_similarity", clusters=0, layer=0, pooling="last").score(inputs)
    centered = get_method("activation_similarity", clusters=0, layer=0, center=True).score(inputs)
    assert not np.allclose(mean, last) and not np.allclose(mean, centered)
    with pytest.raises(DatablameError, match="pooling"):
        get_method("activation_similarity", pooling="max")
    with pytest.raises(DatablameError, match="does not exist"):
        get_method("activation_similarity", layer=9).score(inputs)


def test_cluster_candidates_separates_groups_and_names_their_terms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 8)) * 0.05 + np.eye(8)[0]
    b = rng.normal(size=(4, 8)) * 0.05 + np.eye(8)[1]
    texts = ["amber trade harbour"] * 4 + ["glacier mapping expedition"] * 4
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.4, 0.3])
    ids = [f"r{i}" for i in range(8)]
    groups = cluster_candidates(np.vstack([a, b]), texts, scores, ids, n_clusters=2, n_terms=3)
    assert [g["rows"] for g in groups] == [["r4", "r5", "r6", "r7"], ["r0", "r1", "r2", "r3"]]  # best row first
    assert set(groups[0]["top_terms"]) == {"glacier", "mapping", "expedition"}
    assert set(groups[1]["top_terms"]) == {"amber", "trade", "harbour"}
