"""Gradient alignment: planted rows score above the rest (fails if the sign flips)."""

from __future__ import annotations

import numpy as np
import pytest
from planted_gap import planted_gaps

from datablame.features.gradients import gradient_features
from datablame.methods import get_method


@pytest.mark.parametrize("name", ["grad_dot", "grad_cosine"])
def test_planted_rows_score_higher(planted_run, name):
    cfg, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method(name)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus))
    gaps = planted_gaps(scores, inputs, truth)
    assert np.mean(gaps) > 0, gaps


def test_cosine_is_normalised_dot(planted_run):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    dot, cos = get_method("grad_dot").score(inputs), get_method("grad_cosine").score(inputs)
    g = gradient_features(inputs)
    norms = np.outer(g.queries.double().norm(dim=1).numpy(), g.rows.double().norm(dim=1).numpy())
    np.testing.assert_allclose(cos, dot / norms, rtol=1e-6, atol=1e-9)
    assert len(g.blocks(g.rows)) == len(g.shapes) and g.blocks(g.rows)[0].shape[1:] == g.shapes[0][1:]
