"""Gradient methods against exact leave-one-out retraining on a small convex problem."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.errors import DatablameError
from datablame.tabular import (
    agreement_with_loo,
    attribute,
    exact_loo,
    make_model,
    methods_for,
    removal_test,
)
from datablame.tabular.loo import pooled_pearson


def _problem(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = np.array([1.5, -1.0, 0.5])
    X, Xq = rng.standard_normal((n, 3)), rng.standard_normal((6, 3))
    y = (X @ w + 0.8 * rng.standard_normal(n) > 0).astype(int)
    return X, y, Xq, (Xq @ w > 0).astype(int)


@pytest.fixture(scope="module")
def convex():
    X, y, Xq, yq = _problem()
    model = make_model("linear", "classification", 2, 0, l2=0.05)
    truth = exact_loo(model, X, y, Xq, yq)
    return model, model.clone().fit(X, y), X, y, Xq, yq, truth


def test_influence_matches_exact_leave_one_out(convex):
    """Exact-Hessian influence predicts each row's LOO effect on each query's loss (Pearson >= 0.95)."""
    _, fitted, X, y, Xq, yq, truth = convex
    scores = attribute("influence", fitted, X, y, Xq, yq)
    assert pooled_pearson(scores, truth) >= 0.95
    agree = agreement_with_loo(scores, truth, k=5)
    assert agree["pearson"] >= 0.95 and agree["spearman"] >= 0.9
    # same scale: the prediction is the LOO change itself (nats), not just correlated with it
    slope = float((scores * truth).sum() / (scores * scores).sum())
    assert 0.8 < slope < 1.4, slope  # first order under-predicts a 1/30 removal a little (here ~1.26)


def test_influence_beats_grad_dot_and_random(convex):
    _, fitted, X, y, Xq, yq, truth = convex
    r = {m: agreement_with_loo(attribute(m, fitted, X, y, Xq, yq), truth)["spearman"]
         for m in ("influence", "grad_dot", "random")}
    assert r["influence"] > r["grad_dot"] > r["random"] + 0.3, r


def test_linear_representer_equals_grad_dot_up_to_scale(convex):
    """For a linear model the gradient is dloss/doutput (x) [x, 1], so both scores are the same ranking."""
    _, fitted, X, y, Xq, yq, _ = convex
    a, b = attribute("representer", fitted, X, y, Xq, yq), attribute("grad_dot", fitted, X, y, Xq, yq)
    assert np.allclose(a * fitted.l2 * len(y), b, atol=1e-10)


def test_weight_zero_is_removal_and_the_fit_is_deterministic(convex):
    model, fitted, X, y, Xq, yq, truth = convex
    again = model.clone().fit(X, y)
    assert np.array_equal(fitted.predict(Xq), again.predict(Xq))
    w = np.ones(len(y))
    w[4] = 0
    drop = model.clone().fit(X, y, sample_weight=w).loss(Xq, yq) - fitted.loss(Xq, yq)
    assert np.allclose(drop, truth[:, 4], atol=1e-12)


def test_removal_test_top_k_beats_random(convex):
    model, fitted, X, y, Xq, yq, _ = convex
    res = removal_test(model, X, y, Xq, yq, attribute("influence", fitted, X, y, Xq, yq), k=5, seeds=(0, 1, 2))
    assert res["top_k_rise"] > res["random_k_rise"] and res["effect"] > 0
    assert res["effect_low"] <= res["effect"] <= res["effect_high"]


def test_mlp_methods_run_and_refuse_tree_methods():
    X, y, Xq, yq = _problem(20)
    mlp = make_model("mlp", "classification", 2, 0, hidden=4, epochs=40).fit(X, y)
    assert {"grad_dot", "grad_cosine", "influence", "tracin", "representer"} <= set(methods_for(mlp))
    for m in ("influence", "tracin", "representer"):
        s = attribute(m, mlp, X, y, Xq, yq)
        assert s.shape == (6, 20) and np.isfinite(s).all()
    assert len(mlp.checkpoints) == 5
    with pytest.raises(DatablameError, match="needs a tree model"):
        attribute("leaf_cooccurrence", mlp, X, y, Xq, yq)


def test_regression_influence_sign():
    """Ridge regression: a row whose target agrees with the query's helps it (positive influence)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((25, 2))
    y = X @ np.array([1.0, -0.5]) + 0.1 * rng.standard_normal(25)
    model = make_model("linear", "regression", 0, 0, l2=0.05)
    fitted = model.clone().fit(X, y)
    truth = exact_loo(model, X, y, X[:3], y[:3])
    s = attribute("influence", fitted, X, y, X[:3], y[:3])
    assert pooled_pearson(s, truth) > 0.95
    assert np.all(np.diag(s[:, :3]) > 0)  # a row always helps itself
