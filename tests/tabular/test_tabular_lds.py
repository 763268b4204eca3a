"""LDS for tables: the subsets, the per-query math and its sign, influence vs random on a convex model,
and the methods a library limit rules out (skipped with the reason, a clear error when asked for)."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.errors import DatablameError
from datablame.tabular import (
    attribute,
    lds_check,
    load_bundled,
    make_model,
    methods_for,
    skipped_for,
)
from datablame.tabular.lds import lds_per_query, subset_masks


def test_subset_masks_size_seed_prefix_and_classes():
    y = np.array([0] * 18 + [1] * 2)  # a rare class: every subset must still hold it
    m = subset_masks(20, 0.5, 12, seed=3, y=y)
    assert m.shape == (12, 20) and (m.sum(axis=1) == 10).all()
    assert all(set(y[row]) == {0, 1} for row in m)
    assert (subset_masks(20, 0.5, 5, seed=3, y=y) == m[:5]).all()  # raising M keeps the first subsets
    assert not (subset_masks(20, 0.5, 12, seed=4, y=y) == m).all()
    with pytest.raises(DatablameError, match="fraction"):
        subset_masks(20, 0.01, 4)


def test_lds_sign_follows_the_score_convention():
    # a query whose loss is exactly minus the summed "true" contributions of the kept rows
    rng = np.random.default_rng(0)
    contrib = rng.standard_normal((2, 30))
    masks = subset_masks(30, 0.5, 16, seed=0)
    losses = -(masks.astype(float) @ contrib.T)  # (M, Q): a row with a high contribution lowers the loss
    assert np.allclose(lds_per_query(contrib, masks, losses), 1.0)
    assert np.allclose(lds_per_query(-contrib, masks, losses), -1.0)
    flat = lds_per_query(np.zeros((2, 30)), masks, losses)  # no variation: no LDS
    assert np.isnan(flat).all()


def test_influence_lds_is_clearly_positive_and_random_near_zero_on_a_convex_model():
    d = load_bundled("breast_cancer", seed=0).subset(60, 8, seed=0)
    model = make_model("linear", d.task, d.n_classes, 0, l2=0.05)  # L2 logistic regression: convex
    fitted = model.clone().fit(d.X_train, d.y_train)
    scores = {n: attribute(n, fitted, d.X_train, d.y_train, d.X_test, d.y_test) for n in ("influence", "random")}
    out = lds_check(model, d.X_train, d.y_train, d.X_test, d.y_test, scores, num_subsets=20, seed=0)
    inf, rnd = out["per_method"]["influence"], out["per_method"]["random"]
    assert out["rows_per_subset"] == 30 and inf["n"] == 8 and inf["undefined"] == 0
    assert inf["mean"] > 0.6 and inf["ci_low"] > 0.4
    assert abs(rnd["mean"]) < 0.25
    assert inf["mean"] - rnd["mean"] > 0.5


def test_shap_on_multiclass_sklearn_boosting_is_skipped_with_the_reason():
    d = load_bundled("wine", seed=0).subset(40, 3, seed=0)
    gb = make_model("gradient_boosting", d.task, d.n_classes, 0, n_estimators=3).fit(d.X_train, d.y_train)
    assert "shap_cosine" not in methods_for(gb) and "boostin" in methods_for(gb)
    assert "only for binary classification" in skipped_for(gb)["shap_cosine"]
    with pytest.raises(DatablameError, match="shap.TreeExplainer supports scikit-learn's GradientBoostingClassifier"):
        attribute("shap_cosine", gb, d.X_train, d.y_train, d.X_test, d.y_test)
    b = load_bundled("breast_cancer", seed=0).subset(40, 3, seed=0)  # two classes: shap explains it
    gb2 = make_model("gradient_boosting", b.task, b.n_classes, 0, n_estimators=3).fit(b.X_train, b.y_train)
    assert "shap_cosine" in methods_for(gb2) and not skipped_for(gb2)
    assert attribute("shap_cosine", gb2, b.X_train, b.y_train, b.X_test, b.y_test).shape == (3, 40)
