"""`datablame pipeline`: train -> factors -> scores -> inspect -> evaluate in one command,
resumable stage by stage."""

from __future__ import annotations

import json

import yaml
from pipeline_config import small_config
from test_evaluate_cli import MMLU
from typer.testing import CliRunner

from datablame import api
from datablame.cli import app
from datablame.layout import RunLayout

runner = CliRunner()


def test_pipeline_runs_every_stage_once_and_resumes(tmp_path):
    cfg = small_config(tmp_path / "run", training={"num_train_epochs": 2, "logging_steps": 1})
    corpus = api.load_corpus(cfg)[0]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r.prompt, "reference": r.completion}) + "\n" for r in corpus[:3]))
    (tmp_path / "mmlu.csv").write_text(MMLU)
    raw = cfg.model_dump(mode="json")
    raw["attribution"]["methods"] = ["grad_cosine", "ekfac"]
    raw["evaluate"] = {"prompts_file": str(prompts), "mmlu": {"path": str(tmp_path / "mmlu.csv"), "k_shot": 0},
                       "decoding": {"max_new_tokens": 4}, "bootstrap": {"n_boot": 200}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    layout = RunLayout(cfg.output.dir)

    # a failing stage (unknown layer) keeps the stages before it
    res = runner.invoke(app, ["pipeline", "--config", str(path), "--layer", "no_such_module"])
    assert res.exit_code == 2, res.output
    state = json.loads(layout.pipeline_json.read_text())
    assert set(state["stages"]) == {"train", "factors", "scores"}
    assert layout.factor_path("ekfac").is_file() and layout.results_json.is_file()

    res = runner.invoke(app, ["pipeline", "--config", str(path)])
    assert res.exit_code == 0, res.output
    state = json.loads(layout.pipeline_json.read_text())
    assert list(state["stages"]) == ["train", "factors", "scores", "inspect", "evaluate"]
    assert all(s["ok"] for s in state["stages"].values())
    assert any(p.suffix == ".png" for p in layout.inspect_dir.iterdir())
    assert (layout.evaluate_dir / "evaluation.json").is_file()
    before = {k: v["finished"] for k, v in state["stages"].items()}

    # a rerun with the same config skips every stage; --force --stages evaluate reruns only it
    assert runner.invoke(app, ["pipeline", "--config", str(path)]).exit_code == 0
    assert {k: v["finished"] for k, v in json.loads(layout.pipeline_json.read_text())["stages"].items()} == before
    res = runner.invoke(app, ["pipeline", "--config", str(path), "--stages", "evaluate", "--force"])
    assert res.exit_code == 0, res.output
    after = json.loads(layout.pipeline_json.read_text())["stages"]
    assert {k: after[k]["finished"] for k in ("train", "factors", "scores", "inspect")} == \
        {k: before[k] for k in ("train", "factors", "scores", "inspect")}
    bad = runner.invoke(app, ["pipeline", "--config", str(path), "--stages", "deploy"])
    assert bad.exit_code == 2 and "unknown pipeline stage" in bad.output
