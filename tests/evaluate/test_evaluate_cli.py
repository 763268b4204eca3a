"""`datablame evaluate --type all` on a trained tiny planted run: the comparison table,
BERTScore, similarity, MMLU accuracy on our own MMLU-format file, the charts, and every metric
logged to a local mlflow store, read back with mlflow's own client."""

from __future__ import annotations

import json

import yaml
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame import api
from datablame.cli import app
from datablame.layout import RunLayout

MMLU = """question,A,B,C,D,answer,subject
Which city is the capital of France?,Berlin,Paris,Rome,Madrid,B,geography
What is 2 + 2?,3,4,5,22,B,arithmetic
Which planet is known as the red planet?,Venus,Jupiter,Mars,Saturn,C,astronomy
Which gas do plants take in?,Oxygen,Nitrogen,Helium,Carbon dioxide,D,biology
"""


def test_evaluate_all_writes_everything_and_tracks_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = small_config(tmp_path / "run", training={"num_train_epochs": 2, "logging_steps": 1})
    api.train(cfg)
    corpus, queries, _ = api.load_corpus(cfg)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r.prompt, "reference": r.completion}) + "\n" for r in corpus[:4]))
    (tmp_path / "mmlu.csv").write_text(MMLU)
    raw = cfg.model_dump(mode="json")
    raw["evaluate"] = {"prompts_file": str(prompts), "mmlu": {"path": str(tmp_path / "mmlu.csv"), "k_shot": 1},
                       "decoding": {"max_new_tokens": 6}, "bootstrap": {"n_boot": 200}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--type", "all", "--tracking", "mlflow"])
    assert res.exit_code == 0, res.output
    out = RunLayout(cfg.output.dir).evaluate_dir
    result = json.loads((out / "evaluation.json").read_text())
    assert [m["name"] for m in result["models"]][:2] == ["base", "finetuned"]
    assert set(result["types"]) == {"generation", "bertscore", "similarity", "mmlu"}
    assert len(result["generation"]["rows"]) == 4
    for metric in ("bertscore_f1", "similarity_cosine", "mmlu_accuracy"):
        assert set(result["summary"][metric]) >= {"base", "finetuned"}, metric
    assert (out / "model_scores_comparison.png").is_file() and (out / "train.png").is_file()
    assert (out / "evaluation.md").is_file() and "mmlu_accuracy" in res.output
    note = result["tracking"]
    assert note["ok"], note
    client = MlflowClient(tracking_uri=note["location"])
    (run,) = client.search_runs([client.get_experiment_by_name("datablame-evaluate").experiment_id])
    for name in ("base", "finetuned"):
        assert run.data.metrics[f"{name}/mmlu_accuracy"] == result["summary"]["mmlu_accuracy"][name]["mean"]
        assert run.data.metrics[f"{name}/bertscore_f1"] == result["summary"]["bertscore_f1"][name]["mean"]


def test_evaluate_without_a_trained_model_names_the_fix(tmp_path):
    cfg = small_config(tmp_path / "run")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["evaluate", "--config", str(path), "--type", "generation"])
    assert res.exit_code == 2 and "no fine-tuned model" in res.output and "datablame train" in res.output
