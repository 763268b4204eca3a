"""Regression label noise: the label-signed similarity methods rank corrupted targets above chance.

Before the fix they scored a row by the other rows' residuals at the overfitted model (noise
"value"), which ranked corrupted rows *below* chance on diabetes (AUC 0.06-0.44); now they use the
row as the query ("neighbours": the rows most like it pull away from its label)."""

from __future__ import annotations

import pytest

from datablame.tabular import get_method, load_bundled, make_model, noise_detection

LABEL_SIGNED = ["leaf_cooccurrence", "rf_proximity", "knn", "shap_cosine"]


@pytest.mark.parametrize("kind, params", [("xgboost", {"n_estimators": 30, "max_depth": 3}),
                                          ("random_forest", {"n_estimators": 30})])
def test_label_signed_methods_find_corrupted_regression_targets(kind, params):
    d = load_bundled("diabetes").subset(100, 5, seed=0)
    model = make_model(kind, d.task, 0, 0, **params)
    res = noise_detection(model, d.X_train, d.y_train, LABEL_SIGNED + ["random"], fraction=0.1, seed=0)
    for name in LABEL_SIGNED:
        assert res[name]["auc"] > 0.6, (kind, name, res[name])
    assert 0.3 < res["random"]["auc"] < 0.7


def test_the_label_signed_methods_rank_noise_as_neighbours():
    assert {get_method(n).noise for n in LABEL_SIGNED} == {"neighbours"}
