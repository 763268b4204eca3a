"""Tables through the command line: `demo --tabular`, attribute and verify on a CSV config,
`methods --tabular`, and each kind of bad input as one clear error with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from datablame.cli import app

runner = CliRunner()


def _table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"x1": x1, "x2": x2, "color": np.where(np.arange(n) % 2 == 0, "red", "blue"),
                         "price": 3 * x1 - x2 + rng.normal(scale=0.3, size=n),
                         "label": np.where(x1 + x2 > 0, "yes", "no")})


def _config(tmp_path, frame: pd.DataFrame, data: dict, model: dict, **sections) -> str:
    csv = tmp_path / "table.csv"
    frame.to_csv(csv, index=False)
    cfg = {"data": {"kind": "table", "path": str(csv), **data}, "model": model,
           "output": {"dir": str(tmp_path / "run")}, **sections}
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def _fails(args: list[str], *needles: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    for needle in needles:
        assert needle in res.output, res.output
    assert "Traceback" not in res.output
    return res.output


def test_demo_tabular_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--tabular", "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "attribution" / "results.json").read_text())
    assert result["data"]["kind"] == "table" and result["data"]["name"] == "breast_cancer"
    assert {m["name"] for m in result["methods"]} >= {"boostin", "leaf_cooccurrence", "knn_shapley"}
    q = result["queries"][0]
    top = q["rankings"]["boostin"][0]
    assert top["row_id"].startswith("train:") and "mean radius" in top["metadata"]["features"]
    assert top["metadata"]["label"] in ("0", "1") and "the model predicts" in q["completion"]
    html = (out / "attribution" / "report.html").read_text()
    assert "mean radius=" in html and "boostin" in html
    assert (out / "config.resolved.yaml").is_file()


def test_attribute_and_verify_a_csv_table(tmp_path):
    cfg = _config(tmp_path, _table(), {"target": "label"}, {"kind": "random_forest", "n_estimators": 10},
                  attribution={"methods": ["leaf_cooccurrence", "knn"], "queries": 2, "top_k": 3},
                  verify={"max_train_rows": 12, "k": 3, "seeds": [0, 1]})
    res = runner.invoke(app, ["run", "--config", cfg])  # run = attribute for a table (the model trains there)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["attribute", "--config", cfg])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "run" / "attribution" / "history").iterdir())) == 1  # run's result kept aside
    result = json.loads((tmp_path / "run" / "attribution" / "results.json").read_text())
    assert len(result["queries"]) == 2 and len(result["queries"][0]["rankings"]["knn"]) == 3
    assert result["queries"][0]["rankings"]["knn"][0]["metadata"]["features"]["color"] in ("red", "blue")
    res = runner.invoke(app, ["verify", "--config", cfg])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "run" / "verify" / "tabular_verify.json").read_text())
    assert d["loo"]["retrainings"] == 12 and set(d["loo"]["per_method"]) == {"leaf_cooccurrence", "knn"}
    assert d["removal"]["knn"]["k"] == 3 and d["removal"]["knn"]["seeds"] == 2
    assert "removal test" in res.output


def test_methods_lists_the_tabular_methods():
    res = runner.invoke(app, ["methods", "--tabular", "--json"])
    assert res.exit_code == 0, res.output
    names = {d["name"] for d in json.loads(res.output)}
    assert {"boostin", "influence", "knn_shapley", "leaf_cooccurrence", "random"} <= names
    res = runner.invoke(app, ["methods", "--tabular", "boostin"])
    assert res.exit_code == 0 and "unit: leaf-statistics influence" in res.output, res.output
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0 and "tabular methods (data.kind: table" in res.output


def test_missing_target_column(tmp_path):
    cfg = _config(tmp_path, _table(), {"target": "income"}, {"kind": "random_forest"})
    _fails(["attribute", "--config", cfg], "no target column 'income'")


def test_non_numeric_target_for_regression(tmp_path):
    cfg = _config(tmp_path, _table(), {"target": "label", "task": "regression"}, {"kind": "xgboost"})
    _fails(["attribute", "--config", cfg], "'label' is not numeric", "task='classification'")


def test_nans_a_model_cannot_take(tmp_path):
    frame = _table()
    frame.loc[3, "x1"] = np.nan
    cfg = _config(tmp_path, frame, {"target": "price"}, {"kind": "mlp", "epochs": 5})
    _fails(["attribute", "--config", cfg], "missing values (NaN)", "mlp", "xgboost, lightgbm")


def test_unseen_category_in_a_test_row(tmp_path):
    frame = _table(20)
    first_test_row = int(np.random.default_rng(0).permutation(20)[0])  # from_frame's split, seed 0
    frame.loc[first_test_row, "color"] = "green"
    cfg = _config(tmp_path, frame, {"target": "price", "test_size": 0.25}, {"kind": "random_forest"})
    _fails(["attribute", "--config", cfg], "'color'", "never had", "green")


def test_pickled_model_without_trust_pickle(tmp_path):
    import joblib
    from sklearn.ensemble import RandomForestRegressor

    path = tmp_path / "model.joblib"
    joblib.dump(RandomForestRegressor(n_estimators=2).fit(np.zeros((4, 3)), np.arange(4.0)), path)
    cfg = _config(tmp_path, _table(), {"target": "price"}, {"kind": "random_forest", "load": str(path)})
    _fails(["attribute", "--config", cfg], "pickle", "model.trust_pickle: true")


@pytest.mark.parametrize("model, needle", [
    ({"kind": "xgboost", "max_depth": 0}, "'model.xgboost.max_depth'"),
    ({"kind": "boosted_forest"}, "'model'"),
    ({"kind": "xgboost", "load": "m.json", "max_depth": 3}, "model.max_depth cannot be set with model.load"),
])
def test_a_bad_model_section_names_the_field(tmp_path, model, needle):
    cfg = _config(tmp_path, _table(), {"target": "price"}, model)
    _fails(["attribute", "--config", cfg], needle)


def test_a_text_command_refuses_a_table_config(tmp_path):
    cfg = _config(tmp_path, _table(), {"target": "price"}, {"kind": "xgboost"})
    _fails(["train", "--config", cfg], "table config", "datablame attribute")
