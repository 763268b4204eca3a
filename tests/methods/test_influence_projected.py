"""Projected influence methods (ekfac, kfac, diag_influence) on the planted run: planted rows
score above the rest (fails if the sign flips), factors are saved and reused."""

from __future__ import annotations

import numpy as np
import pytest
from influence_inputs import planted_gap

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
    assert "grad_features" not in fresh.cache  # loading factors needs no gradient pass
    a = get_method("ekfac").score(fresh)
    b = m.score(fresh)
    assert not np.allclose(a, b)  # damping is applied at scoring time


def test_bad_options_are_clear_errors():
    from datablame.errors import DatablameError

    with pytest.raises(DatablameError, match="fisher"):
        get_method("ekfac", fisher="sampled")
    with pytest.raises(DatablameError, match="damping"):
        get_method("kfac", damping=-1.0)
    with pytest.raises(DatablameError, match="bad options"):
        get_method("diag_influence", dampen=1.0)
