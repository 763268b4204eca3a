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
    raw["tracking"] = {"backend": "mlflow"}
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
    _check_tracked_stages(state, layout)

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


def _check_tracked_stages(state, layout):
    """Every stage is in the same mlflow store: training's loss curve step by step as the
    Trainer logged it, each method's scoring time, inspect's plots, the evaluation's metrics."""
    from mlflow.tracking import MlflowClient

    from datablame.evaluate.charts import training_log

    notes = {s: state["stages"][s]["tracking"] for s in ("train", "factors", "scores", "inspect")}
    assert all(n["ok"] for n in notes.values()), notes
    assert len({n["location"] for n in notes.values()}) == 1
    client = MlflowClient(tracking_uri=notes["train"]["location"])
    exp = client.get_experiment_by_name("datablame-evaluate")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    name = layout.root.name
    assert set(runs) == {f"{name}-{s}" for s in ("train", "factors", "scores", "inspect")} | {name}
    logged = [(h["step"], h["loss"]) for h in training_log(layout.model_dir) if "loss" in h]
    history = client.get_metric_history(runs[f"{name}-train"].info.run_id, "train/loss")
    assert len(logged) >= 2
    assert sorted((m.step, m.value) for m in history) == sorted(logged)
    assert runs[f"{name}-train"].data.params["training.num_train_epochs"] == "2.0"
    results = json.loads(layout.results_json.read_text())
    scored = runs[f"{name}-scores"].data.metrics
    for method in ("grad_cosine", "ekfac"):
        assert scored[f"scores/seconds/{method}"] == results["timing"][f"{method}_s"]
    plots = [a.path for a in client.list_artifacts(runs[f"{name}-inspect"].info.run_id)]
    assert plots and all(p.endswith(".png") for p in plots)
    assert "finetuned/mmlu_accuracy" in runs[name].data.metrics
