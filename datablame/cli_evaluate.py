"""`datablame evaluate`: did the fine-tune help? Base vs fine-tuned completions, BERTScore,
semantic similarity, MMLU-style accuracy, charts and experiment tracking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datablame.cli import ConfigOpt, app, friendly


@app.command()
@friendly
def evaluate(
    config: ConfigOpt,
    type: Annotated[str | None, typer.Option(  # noqa: A002 - the flag the seed's pipeline uses
        "--type", help="generation, bertscore, similarity, mmlu or all (comma-separated; default: evaluate.types)")] = None,
    prompts: Annotated[Path | None, typer.Option(help="JSON/JSONL of {prompt, reference(s)} (evaluate.prompts_file)")] = None,
    mmlu: Annotated[Path | None, typer.Option(help="MMLU-format CSV/JSONL file or folder (evaluate.mmlu.path)")] = None,
    base: Annotated[Path | None, typer.Option(help="base model directory (default: the run's model/base, "
                                                   "the adapter switched off, or model.*)")] = None,
    tracking: Annotated[str | None, typer.Option(help="none, mlflow, tensorboard or wandb (tracking.backend)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="mlflow tracking URI (default: a sqlite store in the run)")] = None,
) -> None:
    """Compare the base and the fine-tuned model on the config's prompts and MMLU questions;
    writes <run>/evaluate/ (evaluation.json, .md, .html, model_scores_comparison.png, train.png)."""
    from datablame import api
    from datablame.api import load_config

    cfg = load_config(config)
    result = api.evaluate(cfg, types=type, prompts_file=prompts, mmlu_path=mmlu, base=base, tracking=tracking,
                          tracking_uri=tracking_uri)
    for line in _summary_lines(result):
        typer.echo(line)


def _summary_lines(result: dict) -> list[str]:
    """One line per metric: each model's mean and interval (summary: metric -> model -> stats)."""
    lines = [f"evaluated {', '.join(m['name'] for m in result.get('models', []))}: {', '.join(result.get('types', []))}"]
    for metric, per_model in (result.get("summary") or {}).items():
        lines.append(f"  {metric}: " + "; ".join(f"{name} {_fmt(s)}" for name, s in per_model.items()))
    lines += [f"  skipped: {note}" for note in result.get("skipped", []) or []]
    if (result.get("tracking") or {}).get("error"):
        lines.append(f"  tracking failed (results kept on disk): {result['tracking']['error']}")
    return lines


def _fmt(s: dict) -> str:
    mean, lo, hi = s.get("mean"), s.get("ci_low"), s.get("ci_high")
    if mean is None or mean != mean:
        return "n/a"
    return f"{mean:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None and lo == lo else "")


@app.command()
@friendly
def pipeline(
    config: ConfigOpt,
    stages: Annotated[str | None, typer.Option(
        help="comma-separated subset of train,factors,scores,inspect,evaluate (default: all, in order)")] = None,
    force: Annotated[bool, typer.Option(help="rerun stages already done with this config")] = False,
    layer: Annotated[str | None, typer.Option(help="module `inspect` plots (default: the first selected)")] = None,
) -> None:
    """The seed-000 study in one command: train -> EKFAC factors -> scores -> inspect -> evaluate
    all. Resumable: finished stages are recorded in <run>/pipeline.json and skipped on a rerun."""
    from datablame.api import load_config
    from datablame.api_pipeline import pipeline as run_pipeline

    state = run_pipeline(load_config(config), stages=[s.strip() for s in stages.split(",")] if stages else None,
                         force=force, layer=layer)
    for name, info in state["stages"].items():
        extra = f" (skipped: {info['skipped']})" if isinstance(info.get("skipped"), str) else ""
        typer.echo(f"{name}: done in {info.get('seconds', 0):.1f} s{extra}")
