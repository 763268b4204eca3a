"""`datablame diff`: surface a rare behaviour fine-tuning introduced (amplified sampling),
measure its rate, blame it on training rows, and patch (remove the blamed rows, LoRA-fine-tune,
rescan) against controls; `--demo` runs the offline demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datablame.cli import app, friendly
from datablame.errors import DatablameError


@app.command("diff")
@friendly
def diff_(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="run YAML with a diff: section")] = None,
    stage: Annotated[str, typer.Option(help="scan, attribute, patch, report or all")] = "all",
    demo: Annotated[bool, typer.Option("--demo", help="the offline demo: tiny before/after pair with a planted "
                                       "phrase, scan at alphas 0 and 4, blame, diff_demo.json")] = False,
    output_dir: Annotated[str, typer.Option(help="--demo: where the demo is written")] = "runs/diff-demo",
    n_samples: Annotated[int, typer.Option(min=1, help="--demo: samples per (prompt, alpha)")] = 40,
    methods: Annotated[str, typer.Option(help="--demo: comma-separated methods")] = "grad_cosine,bm25,embedding_cosine",
    pool_size: Annotated[int, typer.Option(min=1, help="--demo: BM25 pool (at most the corpus)")] = 100,
    patch: Annotated[bool, typer.Option("--patch/--no-patch", help="--demo: patch against controls (LoRA "
                                        "fine-tunes, about a minute)")] = True,
) -> None:
    """Scan amplified samples of the after- vs before-model, blame the surfaced ones, patch.

    Writes <run>/diff/ (phase_scan.json, behavior_rates.png, blame.json, patch/,
    patching_comparison.png/.csv, diff_report.md, final_results.png/.json, case_study.md); each
    stage resumes or reuses what is already there."""
    from datablame import api_diff

    if demo:
        doc = api_diff.diff_demo(output_dir, n_samples=n_samples, pool_size=pool_size, patch=patch,
                                 methods=[m.strip() for m in methods.split(",") if m.strip()])
        for p in doc["rates"]:
            typer.echo(f"alpha {p['alpha']:g}: rate {p['rate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] "
                       f"({p['hits']}/{p['n']})")
        k = doc["settings"]["k"]
        for m, r in doc["recall"].items():
            typer.echo(f"{m}: recall@{k} of the planted rows = {r[f'recall@{k}']:.2f}")
        if doc.get("patch"):
            _echo_arms(doc["patch"]["arms"], doc["patch"]["verdicts"], doc["patch"]["alpha"])
        typer.echo(f"wrote {Path(output_dir) / api_diff.DEMO_FILE} in {doc['timings']['total_s']:.0f} s")
        return
    if config is None:
        raise DatablameError("datablame diff needs --config (a run YAML with a diff: section) or --demo",
                         "e.g. datablame diff --config run.yaml --stage scan, or datablame diff --demo")
    from datablame.api import load_config

    summary = api_diff.diff(load_config(config), stage)
    scan = summary.get("scan")
    if scan:
        typer.echo(f"scan: {scan['cells_done']} cells done, {scan['cells_left']} left")
        for p in scan["pooled"]:
            rate = "n/a" if p["rate"] is None else f"{p['rate']:.3f}"
            typer.echo(f"  alpha {p['alpha']:g}: rate {rate} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] ({p['hits']}/{p['n']})")
    if summary.get("blame"):
        b = summary["blame"]
        typer.echo(f"blame: {b['queries']} surfaced samples over a pool of {b['pool']} rows")
        for m, rows in b["top"].items():
            typer.echo(f"  {m}: " + ", ".join(r["row_id"] for r in rows))
    if summary.get("patch"):
        p = summary["patch"]
        typer.echo(f"patch: top {p['top_k']} rows removed per method, {p['seeds']} seeds per arm "
                   f"({p['trained']} fine-tunes run, {p['reused']} reused)")
        _echo_arms(p["arms"], {m: {"verdict": v} for m, v in p["verdicts"].items()}, p["alpha"])
    if summary.get("report"):
        typer.echo(f"report: {summary['report']}")
        for name, path in (summary.get("final") or {}).items():
            typer.echo(f"  {name}: {path}")
    typer.echo(f"out: {summary['out_dir']}")


def _echo_arms(arms: list, verdicts: dict, alpha: float) -> None:
    typer.echo(f"patched rates at alpha {alpha:g} (pooled over seeds, Wilson 95 %):")
    for a in arms:
        v = verdicts.get(a["arm"])
        typer.echo(f"  {a['arm']:<18} {a['rate']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] ({a['hits']}/{a['n']})"
                   + (f"  {v['verdict']}" if v else "  control"))
