"""Method comparison: overlap/Jaccard/Spearman by hand, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datablame.report.compare import compare_methods, write_comparison


def test_pairwise_agreement_by_hand():
    a = np.array([[5.0, 4, 3, 2, 1]])
    b = np.array([[1.0, 2, 3, 4, 5]])  # reversed: top-2 {0,1} vs {4,3}
    c = np.array([[5.0, 4, 1, 2, 3]])  # same top-2 as a
    cmp = compare_methods({"a": a, "b": b, "c": c}, k=2)
    by = {(p["a"], p["b"]): p for p in cmp["pairs"]}
    assert by[("a", "b")]["overlap"] == 0 and by[("a", "b")]["jaccard"] == 0
    assert by[("a", "b")]["spearman"] == pytest.approx(-1.0)
    assert by[("a", "c")]["overlap"] == 2 and by[("a", "c")]["jaccard"] == 1.0
    assert by[("a", "c")]["spearman"] == pytest.approx(0.6)  # d = 0,0,2,0,-2 -> 1 - 6*8/(5*24)
    assert cmp["matrices"]["jaccard"][0][2] == cmp["matrices"]["jaccard"][2][0] == 1.0


def test_write_comparison(tmp_path):
    rng = np.random.default_rng(0)
    scores = {m: rng.normal(size=(3, 20)) for m in ("x", "y")}
    paths = write_comparison(scores, 5, tmp_path)
    data = json.loads(paths["comparison_json"].read_text())
    assert data["k"] == 5 and len(data["pairs"]) == 1
    assert paths["comparison_png"].stat().st_size > 5000
    assert "| x | y |" in paths["comparison_md"].read_text()
    with pytest.raises(ValueError, match="shape"):
        compare_methods({"x": scores["x"], "z": scores["y"][:, :5]}, 3)
