"""A user's saved model: XGBoost JSON/UBJ and LightGBM text load and predict the same; pickle needs trust."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.errors import DatablameError
from datablame.tabular import attribute, load_model, make_model


def _data(k: int = 3):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    return X, np.digitize(X[:, 0], [-0.4, 0.4])[:] % k


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_saved_formats_load(tmp_path, suffix):
    X, y = _data()
    m = make_model("xgboost", "classification", 3, 0, n_estimators=4, max_depth=2, learning_rate=0.2).fit(X, y)
    m.booster.save_model(str(tmp_path / f"m{suffix}"))
    loaded = load_model(tmp_path / f"m{suffix}")
    assert loaded.kind == "xgboost" and loaded.task == "classification" and loaded.n_classes == 3
    assert loaded.n_estimators == 4 and loaded.max_depth == 2 and loaded.learning_rate == pytest.approx(0.2)
    assert np.allclose(loaded.predict(X), m.predict(X), atol=1e-6)
    assert np.allclose(attribute("boostin", loaded, X, y, X[:3], y[:3]), attribute("boostin", m, X, y, X[:3], y[:3]))
    # a loaded model retrains with its own settings (what leave-one-out needs)
    assert np.allclose(loaded.clone().fit(X, y).predict(X), m.predict(X), atol=1e-6)


def test_lightgbm_text_loads(tmp_path):
    X, y = _data(2)
    m = make_model("lightgbm", "classification", 2, 0, n_estimators=5, min_data_in_leaf=3).fit(X, y)
    m.booster.save_model(str(tmp_path / "m.txt"))
    loaded = load_model(tmp_path / "m.txt")
    assert loaded.kind == "lightgbm" and loaded.n_classes == 2 and loaded.n_estimators == 5
    assert np.allclose(loaded.predict(X), m.predict(X))
    assert np.allclose(loaded.clone().fit(X, y).predict(X), m.predict(X))


def test_a_corrupt_xgboost_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatablameError, match="not a readable XGBoost model"):
        load_model(tmp_path / "bad.json")
    with pytest.raises(DatablameError, match="No model file"):
        load_model(tmp_path / "missing.json")


def test_pickle_is_refused_without_the_trust_flag(tmp_path):
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    X, y = _data(2)
    joblib.dump(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y), tmp_path / "rf.joblib")
    with pytest.raises(DatablameError, match="refused by default.*trust_pickle=True"):
        load_model(tmp_path / "rf.joblib")
    with pytest.warns(UserWarning, match="Unpickling"):
        loaded = load_model(tmp_path / "rf.joblib", trust_pickle=True)
    assert loaded.kind == "random_forest" and loaded.n_estimators == 3
    assert attribute("rf_proximity", loaded, X, y, X[:2], y[:2]).shape == (2, 60)


def test_a_foreign_xgboost_model_loads_with_a_warning(tmp_path):
    import xgboost as xgb

    X, y = _data(2)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(X, label=y), 3)
    booster.save_model(str(tmp_path / "f.json"))
    with pytest.warns(UserWarning, match="does not record its learning rate"):
        loaded = load_model(tmp_path / "f.json")
    assert loaded.max_depth == 2 and loaded.n_estimators == 3
    assert np.allclose(loaded.predict(X)[:, 1], booster.predict(xgb.DMatrix(X)), atol=1e-6)
