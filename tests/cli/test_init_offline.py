"""`datablame init` writes a config that runs offline with only data.path edited (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datablame.cli import app
from datablame.config import load_config
from datablame.methods import REGISTRY

runner = CliRunner()
DATABLAME = str(Path(sys.executable).with_name("datablame"))
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_init_default_is_offline_and_lists_every_method(tmp_path):
    path = tmp_path / "run.yaml"
    res = runner.invoke(app, ["init", str(path)])
    assert res.exit_code == 0, res.output
    cfg = load_config(path)
    assert cfg.model.kind == "smollm2-gguf" and cfg.model.name_or_path is None
    text = path.read_text()
    assert "@methods@" not in text and "@about@" not in text
    for name, cls in REGISTRY.items():  # generated from the registry, not hand-written
        assert f"  # {name}  [{cls.family}]" in text, name
    assert all(len(line) <= 120 for line in text.splitlines())


def test_init_hub_example_keeps_the_hub_model(tmp_path):
    path = tmp_path / "hub.yaml"
    res = runner.invoke(app, ["init", str(path), "--example", "hub"])
    assert res.exit_code == 0, res.output
    cfg = load_config(path)
    assert cfg.model.kind == "hf" and cfg.model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    default = tmp_path / "default.yaml"
    runner.invoke(app, ["init", str(default)])
    assert load_config(default).model_dump(exclude={"model"}) == cfg.model_dump(exclude={"model"})


def test_unreachable_hub_model_names_the_offline_kinds(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    path = tmp_path / "hub.yaml"
    runner.invoke(app, ["init", str(path), "--example", "hub"])
    path.write_text(path.read_text().replace("path: data/train.jsonl", f"path: {rows}")
                    .replace("HuggingFaceTB/SmolLM2-135M-Instruct", "datablame-test/no-such-model"))
    proc = subprocess.run([DATABLAME, "train", "--config", str(path)], cwd=tmp_path, env=OFFLINE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    fix = next(line for line in proc.stderr.splitlines() if line.startswith("fix:"))
    assert "smollm2-gguf" in fix and "tiny" in fix, fix


@pytest.mark.slow
def test_init_then_run_offline_with_only_the_data_path_edited(tmp_path):
    rows = tmp_path / "mine" / "rows.jsonl"
    rows.parent.mkdir()
    facts = [("What is the capital of France?", "Paris"), ("What colour is the sky?", "Blue"),
             ("How many legs has a spider?", "Eight"), ("What is frozen water called?", "Ice")]
    rows.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in facts))
    subprocess.run([DATABLAME, "init"], cwd=tmp_path, env=OFFLINE, check=True, capture_output=True, timeout=120)
    cfg_path = tmp_path / "run.yaml"
    text = cfg_path.read_text()
    assert text.count("path: data/train.jsonl") == 1
    cfg_path.write_text(text.replace("path: data/train.jsonl", f"path: {rows}"))
    proc = subprocess.run([DATABLAME, "run", "--config", "run.yaml"], cwd=tmp_path, env=OFFLINE,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "runs" / "my-run").rglob("results.json")).read_text())
    ranked = json.dumps(results)
    assert "France" in ranked and "Paris" in ranked  # the example query's own fact is among the ranked rows
