"""`datablame bench hops|planted`: the ground-truth benchmark (every method and peer, one model)."""

from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from datablame.cli import app, friendly, parse_options
from datablame.errors import DatablameError
from datablame.layout import RunLayout

_parse_options = parse_options  # the shared parser (datablame.cli); old name kept for importers


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@app.command()
@friendly
def bench(
    corpus: Annotated[str, typer.Argument(help="hops (function tokens, seed 002) or planted (facts + poison)")],
    methods: Annotated[str, typer.Option(help="comma-separated registered methods, or 'all'")] = "all",
    peers: Annotated[str, typer.Option(help="comma-separated peers (kronfluence, traker, bergson), 'all' or 'none'")] = "all",
    out: Annotated[str | None, typer.Option(help="run directory (default runs/bench-<corpus>[-small][-<variant>])")] = None,
    size: Annotated[str, typer.Option(help="full (the published tables) or small (seconds; tests)")] = "full",
    seed: Annotated[int, typer.Option(help="corpus, model and training seed")] = 0,
    variant: Annotated[str | None, typer.Option(help="planted corpus variant: easy (default), paraphrase, "
                                                     "lexical_decoys or unlearned")] = None,
    epochs: Annotated[float | None, typer.Option(help="training epochs (default: the preset's)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="a run YAML instead of the preset")] = None,
    option: Annotated[list[str] | None, typer.Option(help="NAME.KEY=VALUE option for a method or peer (repeatable)")] = None,
    results_dir: Annotated[Path | None, typer.Option(help="also write bench_<corpus>.json/.md/.png here")] = None,
    results_name: Annotated[str | None, typer.Option(help="file stem of the --results-dir copies (default "
                                                          "bench_<corpus>), for a variant beside the main table")] = None,
    threads: Annotated[int, typer.Option(help="torch threads; 1 is fastest for tiny models on a shared machine")] = 1,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the CIs")] = 2000,
    overwrite: Annotated[bool, typer.Option(help="move aside a run directory holding another run")] = False,
    resume: Annotated[bool, typer.Option(help="reuse methods an interrupted run already finished "
                                               "(their time and memory are that run's)")] = False,
) -> None:
    """Train (or reuse) the tiny model, run every method and peer, score against ground truth."""
    from datablame import api
    from datablame.api import load_config
    from datablame.report.bench import metrics_table, verdict

    t0 = time.perf_counter()
    if results_name is not None and not re.fullmatch(r"[\w.-]+", results_name):
        raise DatablameError(f"--results-name {results_name!r} is not a plain file stem",
                             "use letters, digits, '_', '-' and '.' only, e.g. bench_planted_normalized")
    if config is not None:
        cfg = load_config(config, other_names_ok=True)  # attribution.options may hold peers' options
        if cfg.data.source != corpus:
            raise DatablameError(f"--config has data.source {cfg.data.source!r} but the benchmark is {corpus!r}",
                                 f"set data.source: {corpus} in the config, or run `datablame bench {cfg.data.source}`")
        if variant is not None:
            raise DatablameError("--variant applies to the preset, not to a --config file",
                                 f"set data.planted.variant: {variant} in {config}, or drop --config")
    else:
        default_out = (f"runs/bench-{corpus}" + ("" if size == "full" else f"-{size}")
                       + ("" if variant in (None, "easy") else f"-{variant}"))
        cfg = api.bench_config(corpus, out or default_out, size=size, seed=seed, epochs=epochs, overwrite=overwrite,
                               variant=variant or "easy")
    result = api.bench(
        cfg, corpus, methods=_split(methods) or None, peers=_split(peers), options=parse_options(option or []),
        n_boot=bootstrap, results_dir=results_dir, results_name=results_name, threads=threads, started=t0, resume=resume,
        command="datablame " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    typer.echo(metrics_table(result))
    typer.echo("")
    le = result["logit_eval"]
    typer.secho(f"logit evaluation: {len(result['queries']['learned'])}/{le['n']} queries learned "
                f"(accuracy {le['accuracy']:.3f})", fg="green", bold=True)
    typer.secho(verdict(result).replace("**", ""), fg="green", bold=True)
    files = RunLayout(cfg.output.dir).bench
    typer.echo(f"results: {files.bench_json}, {files.bench_md}, {files.pr_plot}, {files.recall_plot}")
    if results_dir is not None:
        typer.echo(f"copies: {results_dir}/{results_name or 'bench_' + corpus}.json|.md|_pr.png|_recall_at_k.png")
    typer.echo(f"bench finished in {time.perf_counter() - t0:.0f} s")
