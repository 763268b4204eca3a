"""What each `datablame pipeline` stage sends to the tracker of `tracking:`.

The pipeline's stages (train, factors, scores, inspect) are tracked like the evaluation: one
tracked run per stage, named `<run>-<stage>`, in the same store and experiment as the
evaluation's run (`<run>/evaluate/tracking/` by default), so the seed-000 study shows up in one
mlflow/tensorboard/wandb place. Training sends its loss / learning-rate / grad-norm curve step
by step (from the Trainer's log history we keep), factor fitting its time and module count,
scoring each method's seconds and its recall/mAP when the run has ground truth, inspect its
PNGs. A tracker failure is a warning and a note in pipeline.json, never a lost stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datablame.evaluate.charts import training_log
from datablame.evaluate.settings import TrackingSettings
from datablame.evaluate.tracking import log_safely
from datablame.layout import RunLayout

_CURVE_KEYS = ("loss", "learning_rate", "grad_norm")
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")


def training_curve(model_dir: str | Path) -> tuple[list[tuple[int, dict[str, float]]], dict[str, float]]:
    """(step, {loss, learning_rate, grad_norm}) per logged step, and the run's closing summary."""
    series: list[tuple[int, dict[str, float]]] = []
    summary: dict[str, float] = {}
    for entry in training_log(model_dir):
        values = {f"train/{k}": float(entry[k]) for k in _CURVE_KEYS if isinstance(entry.get(k), (int, float))}
        if values and isinstance(entry.get("step"), int):
            series.append((entry["step"], values))
        summary.update({f"train/{k}": float(entry[k]) for k in _SUMMARY_KEYS if isinstance(entry.get(k), (int, float))})
    return series, summary


def _score_metrics(results_json: Path) -> dict[str, float]:
    try:
        result = json.loads(results_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    metrics = {f"scores/seconds/{key.removesuffix('_s')}": float(s) for key, s in (result.get("timing") or {}).items()
               if isinstance(s, (int, float))}  # timing keys are <method>_s, <stage>_s
    for method, values in ((result.get("evaluation") or {}).get("per_method") or {}).items():
        if isinstance(values, Mapping):  # recall@k is named recall_at_k: mlflow refuses "@" in a name
            metrics.update({f"scores/{k.replace('@', '_at_')}/{method}": float(v) for k, v in values.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return metrics


def track_stage(tracking: TrackingSettings, run_dir: str | Path, stage: str, info: Mapping[str, Any],
                params: Mapping[str, Any]) -> dict[str, Any]:
    """Send one finished pipeline stage to the tracker; returns the tracking note
    ({backend, ok, location?, error?}) that pipeline.json keeps."""
    layout = RunLayout(Path(run_dir))
    series: list[tuple[int, dict[str, float]]] = []
    metrics: dict[str, float] = {f"{stage}/seconds": float(info.get("seconds", 0.0))}
    artifacts: list[Path] = []
    if stage == "train":
        series, summary = training_curve(layout.model_dir)
        metrics.update(summary)
        artifacts += [p for p in (layout.train_summary,) if p.is_file()]
    elif stage == "factors":
        if isinstance(info.get("modules"), int):
            metrics["factors/modules"] = float(info["modules"])
    elif stage == "scores":
        metrics.update(_score_metrics(layout.results_json))
        artifacts += [p for p in layout.attribution.result_files() if p.is_file() and p.suffix in (".json", ".md")]
    elif stage == "inspect":
        artifacts += [Path(v) for v in info.values() if isinstance(v, str) and v.endswith(".png") and Path(v).is_file()]
    return log_safely(tracking, layout.evaluate_dir, f"{layout.root.name}-{stage}", {"stage": stage, **params},
                      metrics, artifacts, series=series)
