"""`datablame methods` (human and --json) and bad method options failing at config load."""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame import api
from datablame.cli import app
from datablame.errors import DatablameError
from datablame.methods import REGISTRY

runner = CliRunner()


def test_methods_lists_every_method_with_its_options():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0, res.output
    for name, cls in REGISTRY.items():
        assert f"{name}  [{cls.family}]" in res.output
        for option in cls.Options.model_fields:
            assert f"    {option} " in res.output, (name, option)
    assert "damping        float | null (>= 0)   null" in res.output  # ekfac's first option: type and default


def test_methods_json_has_every_method_with_options():
    res = runner.invoke(app, ["methods", "--json"])
    assert res.exit_code == 0, res.output
    described = json.loads(res.output)
    assert sorted(d["name"] for d in described) == sorted(REGISTRY)
    by_name = {d["name"]: d for d in described}
    for name, cls in REGISTRY.items():
        assert [o["name"] for o in by_name[name]["options"]] == list(cls.Options.model_fields)
        assert {"family", "sign", "unit", "cost"} <= set(by_name[name])
    trak = {o["name"]: o for o in by_name["trak"]["options"]}
    assert trak["damping"]["default"] == 0.01 and trak["damping"]["description"]


def test_methods_of_some_and_unknown():
    res = runner.invoke(app, ["methods", "tracin", "--json"])
    assert res.exit_code == 0 and [d["name"] for d in json.loads(res.output)] == ["tracin"]
    res = runner.invoke(app, ["methods", "tracn"])
    assert res.exit_code == 2 and "tracn" in res.output


def test_attribute_help_points_to_methods():
    res = runner.invoke(app, ["attribute", "--help"])
    assert res.exit_code == 0 and "datablame methods" in res.output


def _config_file(tmp_path, options) -> tuple:
    """The small planted run (a valid config in every other respect) with these method options."""
    out = tmp_path / "run"
    raw = small_config(out).model_dump(mode="json")
    raw["attribution"]["options"] = options
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, out


@pytest.mark.parametrize(("options", "named"), [
    ({"ekfac": {"dampin": 1e-3}}, ["attribution.options.ekfac.dampin", "unknown option of method 'ekfac'"]),
    ({"ekfac": {"damping": "x"}}, ["attribution.options.ekfac.damping", "'x'"]),
    ({"ekfca": {"damping": 1e-3}}, ["attribution.options.ekfca", "unknown method 'ekfca'"]),
])
@pytest.mark.parametrize("command", ["attribute", "run", "train"])
def test_bad_option_fails_at_config_load(tmp_path, monkeypatch, options, named, command):
    def no_work(*_a, **_k):
        raise AssertionError("reached work: the option should have failed at config load")

    for stage in ("attribute", "run", "train", "prepare_inputs", "load_corpus"):
        monkeypatch.setattr(api, stage, no_work)
    path, out = _config_file(tmp_path, options)
    res = runner.invoke(app, [command, "--config", str(path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "reached work" not in res.output
    output = " ".join(res.output.split())  # the message may wrap
    assert f"invalid config {path}" in output
    for words in named:
        assert words in output
    assert "datablame methods" in output
    assert not out.exists(), "nothing was written: the config failed before any stage ran"


def test_good_options_load_and_peers_need_the_bench(tmp_path):
    path, _ = _config_file(tmp_path, {"ekfac": {"damping": 1e-3}, "trak": {"checkpoints": "last"}})
    assert api.load_config(path).attribution.options["ekfac"] == {"damping": 1e-3}
    path, _ = _config_file(tmp_path, {"traker": {"proj_dim": 256}})
    with pytest.raises(DatablameError, match="unknown method 'traker'"):
        api.load_config(path)
    assert api.load_config(path, other_names_ok=True).attribution.options == {"traker": {"proj_dim": 256}}


def test_python_api_validates_before_any_model_loads(tmp_path, monkeypatch):
    def no_work(*_a, **_k):
        raise AssertionError("reached work")

    monkeypatch.setattr(api, "prepare_inputs", no_work)
    cfg = small_config(tmp_path / "run", attribution={"options": {"ekfac": {"damping": -1}}})
    with pytest.raises(DatablameError, match=r"attribution.options.ekfac.damping: .*greater than or equal to 0"):
        api.attribute(cfg)
    cfg = small_config(tmp_path / "run", attribution={"options": {"trak": {"dampng": 0.1}}})
    for call in (api.attribute, api.verify, api.lds):
        with pytest.raises(DatablameError, match="attribution.options.trak.dampng: unknown option"):
            call(cfg)
