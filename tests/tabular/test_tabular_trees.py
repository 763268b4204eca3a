"""Tree methods: leaf co-occurrence and proximity by hand, BoostIn against exact leave-one-out."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.tabular import agreement_with_loo, attribute, exact_loo, make_model
from datablame.tabular.methods_tree import label_agreement, leaf_cooccurrence_similarity


def test_leaf_cooccurrence_by_hand_on_three_trees():
    # one query, four train rows, three trees; the query sits in leaves (1, 2, 1)
    lq = np.array([[1, 2, 1]])
    lt = np.array([[1, 2, 3], [1, 5, 1], [4, 2, 1], [4, 5, 3]])
    w = np.array([0.5, 0.25, 0.25])
    # tree 0: rows 0, 1 share leaf 1 -> 0.5 / 2 each; tree 1: rows 0, 2 -> 0.25 / 2; tree 2: rows 1, 2 -> 0.25 / 2
    expected = np.array([[0.25 + 0.125, 0.25 + 0.125, 0.125 + 0.125, 0.0]])
    assert np.allclose(leaf_cooccurrence_similarity(lq, lt, w), expected)
    assert leaf_cooccurrence_similarity(lq, lt, w).sum() == pytest.approx(1.0)


def test_leaf_cooccurrence_and_proximity_on_a_real_three_tree_forest():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2))
    y = (X[:, 0] > 0).astype(int)
    Xq, yq = X[:2] + 0.01, y[:2]
    rf = make_model("random_forest", "classification", 2, 0, n_estimators=3, max_depth=2).fit(X, y)
    trees = rf.estimator.estimators_
    sign = label_agreement(y, yq, "classification")
    hand = np.zeros((2, 30))
    prox = np.zeros((2, 30))
    for t in trees:
        leaf_q, leaf_t = t.apply(Xq), t.apply(X)
        for q in range(2):
            same = leaf_t == leaf_q[q]
            hand[q] += same / same.sum() / 3
            prox[q] += same / 3
    assert np.allclose(attribute("leaf_cooccurrence", rf, X, y, Xq, yq), hand * sign)
    assert np.allclose(attribute("rf_proximity", rf, X, y, Xq, yq), prox * sign)


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm", "gradient_boosting"])
@pytest.mark.parametrize("rounds, floor", [(1, 0.9), (3, 0.65)])
def test_boostin_tracks_leave_one_out_on_a_small_regression(kind, rounds, floor):
    """Stumps on 40 rows: with one round BoostIn's only approximation is the fixed split (Spearman ~0.95);
    with more rounds the ignored knock-on effect on later trees costs accuracy (~0.75 at 3)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    y = np.sin(2 * X[:, 0]) + 0.3 * X[:, 1] + 0.1 * rng.standard_normal(40)
    Xq = rng.standard_normal((5, 2))
    yq = np.sin(2 * Xq[:, 0]) + 0.3 * Xq[:, 1]
    kw = {"xgboost": {"max_depth": 1, "reg_lambda": 0.0}, "gradient_boosting": {"max_depth": 1},
          "lightgbm": {"num_leaves": 2, "min_data_in_leaf": 3}}[kind]
    model = make_model(kind, "regression", 0, 0, n_estimators=rounds, learning_rate=0.3, **kw)
    truth = exact_loo(model, X, y, Xq, yq)
    fitted = model.clone().fit(X, y)
    boost = agreement_with_loo(attribute("boostin", fitted, X, y, Xq, yq), truth)
    rand = agreement_with_loo(attribute("random", fitted, X, y, Xq, yq), truth)
    assert boost["spearman"] > floor and boost["spearman"] > rand["spearman"] + 0.3, (boost, rand)


def test_boostin_runs_for_multiclass_and_shap_cosine_for_binary():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((45, 3))
    y = np.digitize(X[:, 0], [-0.5, 0.5])
    m = make_model("xgboost", "classification", 3, 0, n_estimators=5).fit(X, y)
    assert m.n_trees == 15 and np.array_equal(m.tree_class[:4], [0, 1, 2, 0])
    # the per-tree contributions plus the initial score rebuild the raw score
    assert np.isfinite(attribute("boostin", m, X, y, X[:4], y[:4])).all()
    b = make_model("xgboost", "classification", 2, 0, n_estimators=5).fit(X, (y > 0).astype(int))
    s = attribute("shap_cosine", b, X, (y > 0).astype(int), X[:3], (y[:3] > 0).astype(int))
    assert s.shape == (3, 45) and np.all(np.abs(s) <= 1 + 1e-9)
    assert np.allclose(np.diag(s[:, :3]), 1.0)  # a row's SHAP vector is parallel to itself
