"""Projected influence methods (ekfac, kfac, diag_influence) on the planted run: planted rows
score above the rest (fails if the sign flips), factors are saved and reused."""

from __future__ import annotations

import numpy as np
import pytest
from planted_gap import planted_gap

from datablame.methods import get_method


@pytest.mark.parametrize("name", ["ekfac", "kfac", "diag_influence"])
def test_planted_rows_score_higher(planted_run, name):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method(name)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert planted_gap(scores, inputs, truth) > 1.0


def test_true_fisher_and_fit_rows_options(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("ekfac", fisher="true", fit_rows=30, damping=1e-6)
    m.fit(inputs)
    assert m.preconditioner.meta["fit_rows"] == 30 and m.preconditioner.meta["fisher"] == "true"
    assert planted_gap(m.score(inputs), inputs, truth) > 1.0


def test_factors_saved_under_work_dir_and_damping_does_not_refit(planted_run):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    get_method("ekfac").fit(inputs)
    path = inputs.work_dir / "curvature" / "ekfac.safetensors"
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    fresh = make_inputs()
    m = get_method("ekfac", damping=1e-3)
    m.fit(fresh)
    assert path.stat().st_mtime_ns == stamp  # reused, not refitted
    assert fresh.shared.grads is None  # loading factors needs no gradient pass
    a = get_method("ekfac").score(fresh)
    b = m.score(fresh)
    assert not np.allclose(a, b)  # damping is applied at scoring time


def test_bad_options_are_clear_errors():
    from datablame.errors import DatablameError

    with pytest.raises(DatablameError, match="fisher"):
        get_method("ekfac", fisher="sampled")
    with pytest.raises(DatablameError, match="damping"):
        get_method("kfac", damping=-1.0)
    with pytest.raises(DatablameError, match="diag_influence.dampen: unknown option"):
        get_method("diag_influence", dampen=1.0)


@pytest.mark.parametrize("name", ["ekfac", "kfac", "diag_influence"])
def test_normalize_is_the_cosine_in_the_preconditioned_metric(planted_run, name):
    from datablame.errors import DatablameError
    from datablame.features.gradients import gradient_features

    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    raw_m, norm_m = get_method(name), get_method(name, normalize=True)
    raw, norm = raw_m.score(inputs), norm_m.score(inputs)
    # by hand: precondition every row and query with the fitted factors, then divide
    g = gradient_features(inputs)
    pre = raw_m.preconditioner
    pq, pr = pre.precondition(g.queries).numpy(), pre.precondition(g.rows).numpy()
    q_self = (pq * g.queries.double().numpy()).sum(1)
    r_self = (pr * g.rows.double().numpy()).sum(1)
    np.testing.assert_allclose(norm, raw / np.sqrt(np.outer(q_self, r_self)), rtol=1e-6, atol=1e-12)
    assert np.all(np.abs(norm) <= 1 + 1e-9) and (r_self > 0).all()
    assert not np.allclose(np.argsort(-raw, axis=1), np.argsort(-norm, axis=1))  # it changes rankings
    assert planted_gap(norm, inputs, truth) > 1.0  # same sign as the raw scores
    assert norm_m.describe()["unit"].startswith("relative influence") and raw_m.describe()["normalize"] == "false"
    with pytest.raises(DatablameError, match="normalize"):
        get_method(name, normalize="yes")
