"""`datablame inspect`: factor plots of a trained run's layer, and a clear error naming the
available modules when the layer matches none."""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame import api
from datablame.cli import app
from datablame.curvature import factor_path
from datablame.errors import DatablameError

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small trained planted run of its own (the shared planted_run stays untouched)."""
    tmp = tmp_path_factory.mktemp("inspect")
    cfg = small_config(tmp / "run")
    api.train(cfg)
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def test_inspect_writes_both_pngs_and_the_summary(trained):
    cfg, path = trained
    res = runner.invoke(app, ["inspect", "--config", str(path), "--layer", "layers.1.mlp.down_proj"])
    assert res.exit_code == 0, res.output
    run = api.prepare_run_dir(cfg)
    out = run / "inspect"
    heatmap = out / "model.layers.1.mlp.down_proj_lambda_matrix.png"
    sorted_png = out / "model.layers.1.mlp.down_proj_lambda_sorted.png"
    for p in (heatmap, sorted_png):
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == PNG
        assert str(p) in res.output
    summary = json.loads((out / "model.layers.1.mlp.down_proj_lambda.json").read_text())
    k = cfg.attribution.projection
    assert summary["module"] == "model.layers.1.mlp.down_proj" and summary["kind"] == "ekfac"
    assert summary["shape"] == [k.k_out, k.k_in] and summary["max"] > summary["min"] >= 0
    assert "ekfac factors of model.layers.1.mlp.down_proj" in res.output
    factors = factor_path(run / "attribution", "ekfac")
    assert factors.is_file()  # saved where `attribute --method ekfac` looks for them
    mtime = factors.stat().st_mtime_ns
    paths = api.inspect(cfg, "layers.0.mlp.up_proj", kind="ekfac", out_dir=run / "inspect2")
    assert factors.stat().st_mtime_ns == mtime, "the second call must reuse the fitted factors"
    assert paths["heatmap"].read_bytes()[:8] == PNG and paths["heatmap"].parent == run / "inspect2"


def test_kfac_kind_and_bad_requests(trained):
    cfg, path = trained
    paths = api.inspect(cfg, "layers.1.mlp.gate_proj", kind="kfac")
    assert json.loads(paths["summary"].read_text())["kind"] == "kfac"
    res = runner.invoke(app, ["inspect", "--config", str(path), "--layer", "layers.7.self_attn.q_proj"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    text = " ".join(res.output.split())  # rich/typer may wrap long lines
    assert "matches no fitted module" in text
    for name in ("model.layers.0.mlp.gate_proj", "model.layers.1.mlp.down_proj"):
        assert name in text
    with pytest.raises(DatablameError, match="matches several"):
        api.inspect(cfg, "down_proj")
    with pytest.raises(DatablameError, match="unknown factor kind"):
        api.inspect(cfg, "layers.1.mlp.down_proj", kind="trak")
