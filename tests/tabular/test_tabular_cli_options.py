"""Tables through the command line, continued: `--option` on a table config, `verify` with LDS, a
method a library limit rules out, and the per-feature table of report.html."""

from __future__ import annotations

import json
import re

import numpy as np
import yaml
from test_tabular_cli import _config, _fails, _table
from typer.testing import CliRunner

from datablame.cli import app

runner = CliRunner()


def test_option_sets_a_tabular_method_option_and_bad_ones_are_named(tmp_path):
    cfg = _config(tmp_path, _table(), {"target": "label"}, {"kind": "random_forest", "n_estimators": 5},
                  attribution={"methods": ["knn"], "queries": 2, "top_k": 3})
    scores = {}
    for k in (1, 12):
        res = runner.invoke(app, ["attribute", "--config", cfg, "--option", f"knn.k={k}"])
        assert res.exit_code == 0, res.output
        with np.load(tmp_path / "run" / "attribution" / "scores.npz") as z:
            scores[k] = z["knn"]
        got = json.loads((tmp_path / "run" / "attribution" / "results.json").read_text())
        assert got["config"]["attribution"]["options"] == {"knn": {"k": k}}
    # the kernel 1 / (1 + d / d_k): with k = 1 the nearest row scores exactly 1/2 in magnitude
    assert np.allclose(np.abs(scores[1]).max(axis=1), 0.5)
    assert not np.allclose(scores[1], scores[12])
    _fails(["attribute", "--config", cfg, "--option", "knn.k=0"], "--option", "knn.k", "greater than 0")
    _fails(["attribute", "--config", cfg, "--option", "knn.k=abc"], "knn.k", "valid integer")
    _fails(["attribute", "--config", cfg, "--option", "knn.depth=3"], "unknown option(s) ['depth']", "['k']")
    _fails(["attribute", "--config", cfg, "--option", "leafy.k=3"], "Unknown tabular method 'leafy'")
    _fails(["attribute", "--config", cfg, "--option", "knn"], "NAME.KEY=VALUE")


def test_verify_runs_lds_on_a_table_config(tmp_path):
    frame = _table(60)
    cfg = _config(tmp_path, frame, {"target": "price"}, {"kind": "linear", "l2": 0.1},
                  attribution={"methods": ["influence", "random"], "queries": 6},
                  verify={"checks": ["lds"], "lds": {"subsets": 12, "fraction": 0.5}})
    res = runner.invoke(app, ["verify", "--config", cfg])
    assert res.exit_code == 0, res.output
    assert "LDS: 12 retrainings" in res.output
    d = json.loads((tmp_path / "run" / "verify" / "tabular_verify.json").read_text())
    assert "loo" not in d and "removal" not in d
    ld = d["lds"]
    assert ld["subsets"] == 12 and ld["rows_per_subset"] == round(0.5 * d["n_train"])
    assert ld["per_method"]["influence"]["mean"] > ld["per_method"]["random"]["mean"] + 0.3
    assert len(ld["per_method"]["influence"]["per_query"]) == 6
    assert "## LDS" in (tmp_path / "run" / "verify" / "tabular_verify.md").read_text()
    bad = yaml.safe_load(open(cfg))
    bad["verify"]["lds"]["fraction"] = 1.5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    _fails(["verify", "--config", str(tmp_path / "bad.yaml")], "verify.lds.fraction")


def test_a_method_a_library_cannot_run_is_left_out_or_refused(tmp_path):
    frame = _table(45)
    frame["label"] = np.array(["a", "b", "c"])[np.arange(45) % 3]  # three classes
    cfg = _config(tmp_path, frame, {"target": "label"}, {"kind": "gradient_boosting", "n_estimators": 3},
                  attribution={"queries": 1})
    res = runner.invoke(app, ["attribute", "--config", cfg])  # default methods: shap_cosine left out
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "run" / "attribution" / "results.json").read_text())
    assert "boostin" in {m["name"] for m in got["methods"]}
    assert "shap_cosine" not in {m["name"] for m in got["methods"]}
    assert any(n.startswith("shap_cosine left out: shap.TreeExplainer") for n in got["data"]["notes"])
    _fails(["attribute", "--config", cfg, "--method", "shap_cosine"],
           "'shap_cosine' cannot run on this gradient_boosting model", "only for binary classification")


def test_report_has_a_per_feature_table_of_the_query_and_its_blamed_rows(tmp_path):
    frame = _table()
    cfg = _config(tmp_path, frame, {"target": "label"}, {"kind": "random_forest", "n_estimators": 5},
                  attribution={"methods": ["knn", "leaf_cooccurrence"], "queries": 2, "top_k": 3})
    res = runner.invoke(app, ["attribute", "--config", cfg])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "run" / "attribution" / "report.html").read_text()
    assert "<script" not in page and "http" not in page  # self-contained: inline CSS, no CDN
    assert page.count("Feature by feature") == 2
    header = re.search(r"<th>row</th><th>label</th><th>blamed by</th>(.*?)</tr>", page).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == ["x1", "x2", "price", "color"]  # numbers, then categories
    result = json.loads((tmp_path / "run" / "attribution" / "results.json").read_text())
    q = result["queries"][0]
    idx = int(q["query_id"].split(":")[1])  # the query's row in the CSV
    qrow = re.search(r"<tr class='query'>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td class='num'>(.*?)</td>", qrow)
    assert float(cells[0]) == round(float(frame.loc[idx, "x1"]), 6)
    assert float(cells[1]) == round(float(frame.loc[idx, "x2"]), 6)
    assert cells[3] == frame.loc[idx, "color"]
    assert f"<td>{frame.loc[idx, 'label']}</td>" in qrow  # the query's label
    # each blamed row: the color cell is shaded exactly when it is the query's color
    section = page.split("<tr class='query'>", 2)[1].split("</table>")[0]
    rows = re.findall(r"<tr><td><code>(train:\d+)</code></td>(.*?)</tr>", section)
    assert len(rows) >= 3
    for row_id, row in rows:
        color_cell = re.findall(r"<td class='(num(?: close)?)'>(.*?)</td>", row)[3]
        same = frame.loc[int(row_id.split(":")[1]), "color"] == frame.loc[idx, "color"]
        assert (color_cell[0] == "num close") == same and color_cell[1] == frame.loc[int(row_id[6:]), "color"]
