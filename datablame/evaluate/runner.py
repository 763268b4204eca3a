"""`evaluate`: did the fine-tune help? Base vs fine-tuned (and any checkpoints) on the same
prompts and questions, written to `<run>/evaluate/`:

    evaluation.json                the result (source of truth), evaluation.md / .html its views
    model_scores_comparison.png    each metric per model with its 95% CI
    train.png                      loss, learning rate and throughput of the run's training
    tracking/                      the local mlflow store / tensorboard events, when tracked

Inputs are checked before any model is loaded: a missing prompts file, prompts without
references for a reference metric, a malformed MMLU file or an unknown subject fail at once.
With `types=["all"]` an evaluation whose input is missing is skipped with a note instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError
from datablame.evaluate.bertscore import bertscore_all
from datablame.evaluate.charts import scores_chart, train_chart, training_log
from datablame.evaluate.generation import generate_all, side_by_side
from datablame.evaluate.mmlu import load_questions, mmlu_all
from datablame.evaluate.prompts import EvalPrompt, load_prompts, require_references
from datablame.evaluate.settings import (
    REFERENCE_TYPES,
    EvaluateSettings,
    TrackingSettings,
    default_out_dir,
    settings_from,
)
from datablame.evaluate.similarity import similarity_all
from datablame.evaluate.sources import EvalModel, named_models, run_models
from datablame.evaluate.tracking import Tracker, check_tracker, log_safely, make_tracker
from datablame.layout import RunLayout
from datablame.models.loading import LoadedModel
from datablame.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("datablame")

RESULT_JSON, RESULT_MD, RESULT_HTML = "evaluation.json", "evaluation.md", "evaluation.html"
SCORES_PNG, TRAIN_PNG = "model_scores_comparison.png", "train.png"


def _plan(settings: EvaluateSettings) -> tuple[list[str], dict[str, str], list[EvalPrompt], tuple | None]:
    """(types to run, skipped type -> why, prompts, MMLU questions), all inputs checked."""
    types, from_all = settings.resolved_types()
    skipped: dict[str, str] = {}
    needs_prompts = [t for t in types if t in ("generation", *REFERENCE_TYPES)]
    prompts: list[EvalPrompt] = []
    if needs_prompts and not settings.prompts_file:
        if not from_all:
            raise DatablameError(f"evaluation {needs_prompts[0]} needs prompts, but no prompts file was given",
                                 "pass a JSON/JSONL prompts file (evaluate.prompts_file, --prompts)")
        skipped.update({t: "no prompts file" for t in needs_prompts})
    elif needs_prompts:
        prompts = load_prompts(settings.prompts_file)
        for t in [t for t in needs_prompts if t in REFERENCE_TYPES]:
            if from_all and not all(p.references for p in prompts):
                skipped[t] = "not every prompt has a reference answer"
            else:
                require_references(prompts, t, settings.prompts_file)
    questions = None
    if "mmlu" in types:
        try:
            questions = load_questions(settings.mmlu)
        except DatablameError as err:
            if not from_all or settings.mmlu.path:
                raise
            skipped["mmlu"] = err.problem
    types = [t for t in types if t not in skipped]
    if {"bertscore", "similarity"} & set(types) and "generation" not in types:
        types.insert(0, "generation")  # reference metrics score the completions
    if not types:
        raise DatablameError(f"nothing to evaluate ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})",
                             "pass a prompts file (--prompts) and/or MMLU files (--mmlu)")
    return types, skipped, prompts, questions


def _summary(result: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """metric -> model -> {mean, ci_low, ci_high, n}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, prefix in (("bertscore", "bertscore_"), ("similarity", "similarity_")):
        for name, per in result.get(kind, {}).get("models", {}).items():
            for metric, s in per["summary"].items():
                out.setdefault(prefix + metric, {})[name] = s
    for name, per in result.get("mmlu", {}).get("models", {}).items():
        out.setdefault("mmlu_accuracy", {})[name] = per["accuracy"]
    return out


def _tracked_metrics(result: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for metric, per in result["summary"].items():
        for name, s in per.items():
            if s["mean"] == s["mean"]:
                flat.update({f"{name}/{metric}": s["mean"], f"{name}/{metric}_ci_low": s["ci_low"],
                             f"{name}/{metric}_ci_high": s["ci_high"]})
    for name, per in result.get("mmlu", {}).get("models", {}).items():
        flat.update({f"{name}/mmlu_accuracy/{subj}": s["accuracy"]["mean"] for subj, s in per["subjects"].items()})
    return flat


def _write(out: Path, result: dict[str, Any]) -> None:
    from datablame.evaluate.render import render_html, render_markdown

    atomic_write_json(out / RESULT_JSON, result)
    atomic_write_text(out / RESULT_MD, render_markdown(result))
    atomic_write_text(out / RESULT_HTML, render_html(result))


def evaluate(
    run_dir: str | Path | None = None,
    *,
    models: Sequence[EvalModel | tuple[str, LoadedModel]] | None = None,
    prompts_file: str | Path | None = None,
    types: Sequence[str] | str | None = None,
    settings: EvaluateSettings | None = None,
    tracking: TrackingSettings | None = None,
    out_dir: str | Path | None = None,
    tracker_factory: Callable[[TrackingSettings, str | Path, str], Tracker] = make_tracker,
) -> dict[str, Any]:
    """Evaluate the run's base and fine-tuned model (or `models`, the first being the
    reference) and write `<run>/evaluate/` (or `out_dir`). Returns the result written to
    evaluation.json. `prompts_file` and `types` override the same fields of `settings`."""
    settings = settings or EvaluateSettings()
    update: dict[str, Any] = {}
    if prompts_file is not None:
        update["prompts_file"] = str(prompts_file)
    if types is not None:
        update["types"] = settings_from(types).types
    settings = settings.model_copy(update=update)
    tracking = tracking or TrackingSettings()
    check_tracker(tracking)
    if run_dir is None and out_dir is None:
        raise DatablameError("evaluate needs a run directory or an output folder", "pass run_dir or out_dir")
    if run_dir is None and not models:
        raise DatablameError("evaluate needs a run directory or loaded models", "pass run_dir, or models=[...]")
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dir)
    kinds, skipped, prompts, questions = _plan(settings)

    compared = named_models(models) if models else run_models(
        run_dir, base=settings.base, checkpoints=settings.checkpoints, device=settings.device)
    device = settings.device
    result: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run_dir) if run_dir is not None else None,
        "models": [{"name": m.name, "source": m.source, "adapter_off": m.adapter_off} for m in compared],
        "types": kinds, "skipped": skipped, "settings": settings.model_dump(mode="json"),
    }
    if "generation" in kinds:
        log.info("generating %d completions with %d models", len(prompts), len(compared))
        completions = generate_all(compared, prompts, settings.decoding)
        result["generation"] = {"decoding": settings.decoding.model_dump(), "rows": side_by_side(prompts, completions)}
        refs = [p.references for p in prompts]
        if "bertscore" in kinds:
            result["bertscore"] = bertscore_all(completions, refs, settings.bertscore, settings.bootstrap, device)
        if "similarity" in kinds:
            result["similarity"] = similarity_all(completions, refs, settings.similarity, settings.bootstrap, device)
    if "mmlu" in kinds:
        result["mmlu"] = mmlu_all(compared, questions, settings.mmlu, settings.bootstrap)
    result["summary"] = _summary(result)
    out.mkdir(parents=True, exist_ok=True)
    _write(out, result)  # the numbers are on disk before charts or tracking can fail

    charts: list[str] = []
    if settings.charts:
        if scores_chart(result["summary"], out / SCORES_PNG):
            charts.append(SCORES_PNG)
        if run_dir is not None and train_chart(training_log(RunLayout(Path(run_dir)).model_dir), out / TRAIN_PNG):
            charts.append(TRAIN_PNG)
        result["charts"] = charts
        _write(out, result)
    run_name = Path(run_dir).name if run_dir is not None else out.name
    params = {"run_dir": result["run_dir"], "models": {m["name"]: m["source"] for m in result["models"]},
              **{k: v for k, v in result["settings"].items() if v not in (None, [], {})}}
    artifacts = [out / RESULT_JSON, out / RESULT_MD, *(out / c for c in charts)]
    result["tracking"] = log_safely(tracking, out, run_name, params, _tracked_metrics(result), artifacts,
                                    factory=tracker_factory)
    if tracking.backend != "none":
        _write(out, result)
    return result
