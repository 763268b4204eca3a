"""`evaluate` end to end on a tiny run directory: what it writes, what it compares, what it refuses."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_loaded

from datablame.errors import DatablameError
from datablame.evaluate import EvaluateSettings, TrackingSettings, evaluate
from datablame.evaluate.charts import train_chart, training_log
from datablame.evaluate.generation import generate
from datablame.evaluate.settings import DecodingSettings, MMLUSettings
from datablame.evaluate.sources import EvalModel, run_models


def test_run_models_are_base_and_final(tiny_run):
    base, tuned = run_models(tiny_run, device="cpu")
    assert (base.name, tuned.name) == ("base", "finetuned")
    assert base.loaded.fingerprint == tiny_loaded(0).fingerprint
    assert tuned.loaded.fingerprint == tiny_loaded(1).fingerprint


def test_everything_on_a_run(tiny_run, prompts_file, mmlu_file):
    settings = EvaluateSettings(decoding=DecodingSettings(max_new_tokens=4), mmlu=MMLUSettings(path=str(mmlu_file), k_shot=1),
                                device="cpu")
    res = evaluate(tiny_run, prompts_file=prompts_file, types="all", settings=settings)
    out = tiny_run / "evaluate"
    for name in ("evaluation.json", "evaluation.md", "evaluation.html", "model_scores_comparison.png", "train.png"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert on_disk["summary"] == json.loads(json.dumps(res["summary"]))
    assert res["types"] == ["generation", "bertscore", "similarity", "mmlu"] and res["skipped"] == {}
    assert set(res["summary"]) == {"bertscore_precision", "bertscore_recall", "bertscore_f1", "similarity_cosine",
                                   "mmlu_accuracy"}
    assert all(set(per) == {"base", "finetuned"} for per in res["summary"].values())
    # the completions in the table are the models' own greedy completions
    again = generate(EvalModel("b", tiny_loaded(0)), [r["prompt"] for r in res["generation"]["rows"]],
                     DecodingSettings(max_new_tokens=4))
    assert [r["completions"]["base"] for r in res["generation"]["rows"]] == again
    md = (out / "evaluation.md").read_text(encoding="utf-8")
    assert "| bertscore_f1 |" in md and "no baseline rescaling" in md and "basic_facts" in md
    assert res["tracking"] == {"backend": "none", "ok": True}


def test_all_skips_what_has_no_input(tiny_run, prompts_file):
    res = evaluate(tiny_run, prompts_file=prompts_file, types=["all"],
                   settings=EvaluateSettings(decoding=DecodingSettings(max_new_tokens=2), charts=False,
                                             mmlu=MMLUSettings(hf_dataset="no-such-org/no-mmlu")))
    assert "mmlu" in res["skipped"] and "mmlu" not in res["types"]


def test_reference_metric_without_references_fails_before_loading(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "a"}]), encoding="utf-8")
    with pytest.raises(DatablameError, match="similarity compares answers with reference answers"):
        evaluate(tmp_path / "not-a-run", prompts_file=path, types="similarity")


def test_mmlu_without_local_files_names_the_option(tiny_run):
    with pytest.raises(DatablameError, match="not available offline") as err:
        evaluate(tiny_run, types="mmlu", settings=EvaluateSettings(mmlu=MMLUSettings(hf_dataset="no-such/mmlu")))
    assert "--mmlu" in err.value.fix


def test_unknown_type_is_named(tiny_run):
    with pytest.raises(DatablameError, match="evaluate setting types"):
        evaluate(tiny_run, types="rouge")


def test_loaded_models_and_tracking_failure(tmp_path, prompts_file):
    def broken(settings, out_dir, run_name):
        raise OSError("disk full on the tracking server")

    res = evaluate(models=[("a", tiny_loaded(0)), ("b", tiny_loaded(1))], prompts_file=prompts_file,
                   types="generation", out_dir=tmp_path / "ev", tracking=TrackingSettings(backend="tensorboard"),
                   settings=EvaluateSettings(decoding=DecodingSettings(max_new_tokens=2)), tracker_factory=broken)
    assert res["tracking"]["ok"] is False
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["generation"]["rows"] == res["generation"]["rows"] and saved["tracking"]["ok"] is False


def test_train_chart_from_the_run_log(tiny_run, tmp_path):
    hist = training_log(tiny_run / "model")
    assert [h["loss"] for h in hist if "loss" in h] == [4.0 - s / 4 for s in range(1, 9)]
    assert train_chart(hist, tmp_path / "t.png").stat().st_size > 1000
    assert train_chart([{"train_runtime": 1.0, "step": 3}], tmp_path / "u.png") is None  # no loss logged


def test_gpu_memory_is_logged_per_step_and_drawn(tmp_path):
    """On CUDA the training log carries the peak GPU memory per logged step (simulated here:
    the callback takes the reading function), and train.png gets a fourth panel for it."""
    from types import SimpleNamespace

    import matplotlib.image as mpimg

    from datablame.train.finetune import memory_callback

    state = SimpleNamespace(log_history=[{"loss": 2.0, "step": 1}])
    memory_callback(lambda args: 1.23456).on_log(None, state, None, logs={"loss": 2.0})
    assert state.log_history[-1] == {"loss": 2.0, "step": 1, "gpu_memory_gb": 1.2346}
    cpu = SimpleNamespace(log_history=[{"loss": 2.0, "step": 1}])
    memory_callback().on_log(SimpleNamespace(device=SimpleNamespace(type="cpu")), cpu, None, logs={})
    assert cpu.log_history[-1] == {"loss": 2.0, "step": 1}
    hist = [{"loss": 2.0, "step": 1, "gpu_memory_gb": 1.0}, {"loss": 1.0, "step": 2, "gpu_memory_gb": 1.5}]
    wide = mpimg.imread(train_chart(hist, tmp_path / "gpu.png"))
    narrow = mpimg.imread(train_chart([{k: v for k, v in h.items() if k != "gpu_memory_gb"} for h in hist],
                                      tmp_path / "cpu.png"))
    assert wide.shape[1] > narrow.shape[1] * 1.2  # the memory panel is there only with memory logged
