"""The command line: friendly errors (exit 2, one message naming the fix), init, attribute."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from datablame.cli import app

runner = CliRunner()


def test_init_writes_a_valid_commented_config_and_refuses_to_clobber(tmp_path):
    from datablame.config import load_config

    path = tmp_path / "run.yaml"
    res = runner.invoke(app, ["init", str(path)])
    assert res.exit_code == 0, res.output
    text = path.read_text()
    assert "#" in text and load_config(path).attribution.method == "grad_cosine"
    path.write_text("mine")
    res = runner.invoke(app, ["init", str(path)])
    assert res.exit_code == 2 and "--force" in res.output
    assert path.read_text() == "mine", "an existing file is never overwritten without --force"
    res = runner.invoke(app, ["init", str(tmp_path / "t.yaml"), "--example", "tinyllama"])
    assert res.exit_code == 0 and "TinyLlama" in (tmp_path / "t.yaml").read_text()


def test_missing_config_file(tmp_path):
    res = runner.invoke(app, ["run", "--config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "nope.yaml" in res.output and "Traceback" not in res.output


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "planted"}, "model": {"kind": "tiny"},
                                    "training": {"learning_rat": 1e-3}}))
    res = runner.invoke(app, ["train", "--config", str(path)])
    assert res.exit_code == 2 and "learning_rat" in res.output


def test_missing_data_file_is_one_clear_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "file", "path": str(tmp_path / "rows.jsonl")},
                                    "model": {"kind": "tiny"}, "output": {"dir": str(tmp_path / "out")}}))
    res = runner.invoke(app, ["run", "--config", str(path)])
    assert res.exit_code == 2, res.output
    assert "rows.jsonl" in res.output and "fix:" in res.output


def test_unknown_method_lists_the_registry(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "planted"}, "model": {"kind": "tiny"},
                                    "output": {"dir": str(tmp_path / "out")}}))
    res = runner.invoke(app, ["attribute", "--config", str(path), "--method", "grad_cosine,telepathy"])
    assert res.exit_code == 2 and "telepathy" in res.output and "grad_cosine" in res.output
