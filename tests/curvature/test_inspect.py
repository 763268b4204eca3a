"""Factor inspection PNGs (seed 000): lambda heatmap and sorted lambda plot for a named layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from influence_inputs import random_rows, tiny_inputs

from datablame.curvature.inspect import inspect_factors
from datablame.errors import DatablameError
from datablame.methods import get_method


def test_inspection_pngs_for_a_named_layer(tiny_llama, tmp_path):
    import matplotlib.image as mpimg

    work = tmp_path / "attribution"
    inputs = tiny_inputs(tiny_llama, random_rows(8, seed=9), random_rows(2, seed=10), k=16, work_dir=work)
    get_method("ekfac").fit(inputs)
    paths = inspect_factors(work, "layers.2.mlp.down_proj", tmp_path / "inspect")
    assert set(paths) == {"heatmap", "sorted", "summary"}
    for key in ("heatmap", "sorted"):
        img = mpimg.imread(paths[key])
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert float(np.std(img[..., :3])) > 0.05  # not a blank canvas
    summary = json.loads(paths["summary"].read_text())
    assert summary["module"] == "model.layers.2.mlp.down_proj" and summary["shape"] == [16, 16]
    assert summary["max"] > summary["min"] >= 0
    assert 0 < summary["values_above_damping"] <= 256
    assert -1 <= summary["kfac_vs_ekfac_spearman"] <= 1


def test_unknown_or_ambiguous_layer_is_a_clear_error(tiny_llama, tmp_path):
    inputs = tiny_inputs(tiny_llama, random_rows(4), random_rows(1), k=4, work_dir=tmp_path)
    get_method("ekfac").fit(inputs)
    with pytest.raises(DatablameError, match="matches several"):
        inspect_factors(tmp_path, "down_proj", tmp_path / "o")
    with pytest.raises(DatablameError, match="no fitted module"):
        inspect_factors(tmp_path, "layers.9.mlp.up_proj", tmp_path / "o")
    with pytest.raises(DatablameError, match="no curvature factors"):
        inspect_factors(tmp_path, "layers.0.mlp.up_proj", tmp_path / "o", kind="kfac")
