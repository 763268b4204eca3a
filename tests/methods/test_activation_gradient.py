"""activation_gradient: cosine of dL/dh at decoder layers (sign, aggregation, learned weights)."""

from __future__ import annotations

import numpy as np
import pytest
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.methods import get_method


def test_planted_rows_score_higher(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("activation_gradient")
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and np.all(np.abs(scores) <= 1 + 1e-9)
    assert np.mean(planted_gaps(scores, inputs, truth)) > 0  # would fail with the sign flipped
    np.testing.assert_array_equal(scores, get_method("activation_gradient").score(make_inputs()))


def test_aggregations_combine_the_per_layer_scores(planted_run):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    per_layer = get_method("activation_gradient").per_layer(inputs)
    assert per_layer.shape == (2, len(inputs.queries), len(inputs.corpus))
    np.testing.assert_allclose(get_method("activation_gradient").score(inputs), per_layer.mean(axis=0))
    np.testing.assert_allclose(get_method("activation_gradient", aggregate="topk", top_k=1).score(inputs),
                               per_layer.max(axis=0))
    np.testing.assert_allclose(get_method("activation_gradient", layers=1).score(inputs), per_layer[1])
    np.testing.assert_allclose(get_method("activation_gradient", layer_weights=[0, 2]).score(inputs), per_layer[1])

    learned = get_method("activation_gradient", aggregate="learned")
    scores = learned.score(inputs)
    w = np.asarray(learned.info["weights"])
    assert learned.info["reference"] == "grad_cosine" and abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
    np.testing.assert_allclose(scores, np.einsum("l,lqr->qr", w, per_layer))
    ref = get_method("grad_cosine").score(inputs)

    def agreement(s):
        return np.mean([np.corrcoef(s[q], ref[q])[0, 1] for q in range(len(s))])

    assert agreement(scores) >= agreement(per_layer.mean(axis=0)) - 1e-9  # fitted to agree with grad_cosine


def test_bad_options_refused(planted_run):
    _, make_inputs, _ = planted_run
    with pytest.raises(DatablameError, match="aggregate"):
        get_method("activation_gradient", aggregate="median")
    with pytest.raises(DatablameError, match="one weight per selected layer"):
        get_method("activation_gradient", layer_weights=[1, 1, 1]).score(make_inputs())
    with pytest.raises(DatablameError, match="own scores"):
        get_method("activation_gradient", aggregate="learned", reference="activation_gradient").score(make_inputs())
