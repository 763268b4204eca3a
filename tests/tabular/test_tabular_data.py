"""TableData: encoding fixed on the train split, seeded splits, bundled tables, and every bad input's message."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datablame.errors import DatablameError
from datablame.tabular import from_file, from_frame, load_bundled, make_model


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.standard_normal(n), "b": rng.integers(0, 100, n).astype(float),
                         "color": ["red", "green", "blue", "red"] * (n // 4),
                         "y": (rng.standard_normal(n) > 0).astype(int)})


def test_split_is_seeded_and_one_hot_uses_train_categories():
    df = _frame()
    d1, d2 = from_frame(df, "y", seed=3), from_frame(df, "y", seed=3)
    assert np.array_equal(d1.train_index, d2.train_index) and not np.array_equal(
        d1.train_index, from_frame(df, "y", seed=4).train_index)
    assert d1.task == "classification" and d1.classes == ["0", "1"]
    assert d1.feature_names == ["a", "b", "color=blue", "color=green", "color=red"]
    # standardised on the train split: mean 0, std 1 there (not on the test split)
    assert np.allclose(d1.X_train[:, :2].mean(0), 0) and np.allclose(d1.X_train[:, :2].std(0), 1)
    # one-hot rows sum to one and match the source
    assert np.all(d1.X_train[:, 2:].sum(1) == 1)
    src = df["color"].to_numpy()[d1.train_index]
    assert all(d1.feature_names[2 + int(np.argmax(r))] == f"color={c}" for r, c in zip(d1.X_train[:, 2:], src,
                                                                                         strict=True))


def test_unseen_category_in_the_test_split_is_an_error():
    df = _frame(40)
    d = from_frame(df, "y", seed=0)
    row = df.iloc[d.test_index[:1]].copy()
    row["color"] = "purple"
    with pytest.raises(DatablameError, match=r"categories the train split never had: \['purple'\]"):
        d.encode(row)
    df.loc[df.index[d.test_index[0]], "color"] = "purple"  # only in the test split
    with pytest.raises(DatablameError, match="test split has categories the train split never had"):
        from_frame(df, "y", seed=0)


def test_missing_target_column():
    with pytest.raises(DatablameError, match="no target column 'label'.*Fix: name an existing column"):
        from_frame(_frame(), "label")


def test_non_numeric_target_for_regression():
    df = _frame()
    df["y"] = ["lo", "hi"] * 20
    with pytest.raises(DatablameError, match="not numeric.*Fix: use task='classification'"):
        from_frame(df, "y", task="regression")
    assert from_frame(df, "y").task == "classification"


def test_nan_features_refused_by_models_that_cannot_take_them():
    df = _frame()
    df.loc[3, "a"] = np.nan
    d = from_frame(df, "y", seed=0)
    assert d.has_nan
    for kind in ("linear", "mlp", "gradient_boosting"):
        with pytest.raises(DatablameError, match=f"missing values \\(NaN\\), which the {kind} model cannot take"):
            make_model(kind, d.task, d.n_classes).fit(np.vstack([d.X_train, d.X_test]),
                                                      np.concatenate([d.y_train, d.y_test]))
    # xgboost takes them
    make_model("xgboost", d.task, d.n_classes, n_estimators=3).fit(np.vstack([d.X_train, d.X_test]),
                                                                   np.concatenate([d.y_train, d.y_test]))


def test_missing_target_values_and_unknown_file_format(tmp_path):
    df = _frame().astype({"y": float})
    df.loc[0, "y"] = np.nan
    with pytest.raises(DatablameError, match="target column 'y' has 1 missing values"):
        from_frame(df, "y")
    bad = tmp_path / "t.xlsx"
    bad.write_text("x")
    with pytest.raises(DatablameError, match="use a .csv or .parquet file"):
        from_file(bad, "y")


def test_csv_and_parquet_give_the_same_table(tmp_path):
    df = _frame()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    a, b = from_file(tmp_path / "t.csv", "y"), from_file(tmp_path / "t.parquet", "y")
    assert np.allclose(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)


def test_bundled_tables_load_without_download():
    bc, db = load_bundled("breast_cancer"), load_bundled("diabetes")
    assert bc.task == "classification" and bc.n_classes == 2 and bc.X_train.shape[1] == 30
    assert db.task == "regression" and abs(db.y_train.mean()) < 1e-9  # standardised target
    assert load_bundled("wine").n_classes == 3 and load_bundled("digits").n_classes == 10
    small = bc.subset(20, 5, seed=1)
    assert small.X_train.shape == (20, 30) and small.X_test.shape == (5, 30)
    with pytest.raises(DatablameError, match="Unknown bundled dataset"):
        load_bundled("iris2")
