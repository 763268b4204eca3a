"""Experiment tracking, for real: mlflow and tensorboard values read back with their own readers;
a failing tracker loses nothing already on disk."""

from __future__ import annotations

import importlib.util

import pytest

from datablame.errors import DatablameError
from datablame.evaluate.charts import scores_chart
from datablame.evaluate.settings import TrackingSettings
from datablame.evaluate.tracking import check_tracker, log_safely

PARAMS = {"run_dir": "/r", "decoding": {"max_new_tokens": 8, "stop": ["\n"]}}
METRICS = {"base/bertscore_f1": 0.5, "finetuned/bertscore_f1": 0.75}


def _png(tmp_path):
    return scores_chart({"bertscore_f1": {"base": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}}}, tmp_path / "c.png")


def test_mlflow_sqlite_store_reads_back(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    png = _png(tmp_path)
    note = log_safely(TrackingSettings(backend="mlflow", experiment="e1"), tmp_path, "myrun", PARAMS, METRICS, [png])
    assert note["ok"], note
    assert note["location"].startswith("sqlite:///") and (tmp_path / "tracking" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=note["location"])
    exp = client.get_experiment_by_name("e1")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "myrun" and run.info.status == "FINISHED"
    assert run.data.metrics == METRICS
    assert run.data.params["decoding.max_new_tokens"] == "8"
    assert run.data.params["decoding.stop"] == '["\\n"]'
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["c.png"]
    assert str(tmp_path) in exp.artifact_location  # artifacts stay beside the store, not in the cwd


def test_tensorboard_events_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    note = log_safely(TrackingSettings(backend="tensorboard"), tmp_path, "myrun", PARAMS, METRICS, [_png(tmp_path)])
    assert note["ok"], note
    acc = EventAccumulator(note["location"], size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert set(METRICS) <= set(tags["scalars"])
    for key, value in METRICS.items():
        assert [e.value for e in acc.Scalars(key)] == [pytest.approx(value)]
    assert "c" in tags["images"]


def test_training_curve_is_tracked_step_by_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curve = [(1, {"train/loss": 2.5, "train/learning_rate": 1e-3}), (2, {"train/loss": 1.75}), (4, {"train/loss": 1.0})]
    note = log_safely(TrackingSettings(backend="tensorboard"), tmp_path, "r", {}, {"train/seconds": 3.0}, [], series=curve)
    assert note["ok"], note
    acc = EventAccumulator(note["location"], size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.5), (2, 1.75), (4, 1.0)]
    assert [(e.step, e.value) for e in acc.Scalars("train/learning_rate")] == [(1, pytest.approx(1e-3))]


def test_failing_tracker_is_a_note_not_an_error(tmp_path):
    result = tmp_path / "evaluation.json"
    result.write_text("{}", encoding="utf-8")

    def broken(settings, out_dir, run_name):
        raise RuntimeError("tracking server down")

    note = log_safely(TrackingSettings(backend="mlflow"), tmp_path, "r", PARAMS, METRICS, [result], factory=broken)
    assert note == {"backend": "mlflow", "ok": False, "error": "RuntimeError: tracking server down"}
    assert result.read_text(encoding="utf-8") == "{}"


def test_none_does_nothing(tmp_path):
    assert log_safely(TrackingSettings(), tmp_path, "r", PARAMS, METRICS, []) == {"backend": "none", "ok": True}
    assert not (tmp_path / "tracking").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_missing_is_named_before_work():
    with pytest.raises(DatablameError, match="wandb needs the package wandb") as err:
        check_tracker(TrackingSettings(backend="wandb"))
    assert "tracking.backend: none" in err.value.fix
