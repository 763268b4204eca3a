"""`datablame index`: featurize the training rows once into the run's feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datablame.cli import ConfigOpt, app, friendly


@app.command()
@friendly
def index(
    config: ConfigOpt,
    faiss: Annotated[str, typer.Option(help="auto (flat < 50k rows, else ivf), flat, ivf, ivfpq or none")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace a store built from another model/data/projection")] = False,
) -> None:
    """Build the gradient feature store (resumable; progress with rows/s and ETA)."""
    from datablame import api
    from datablame.config import load_config

    summary = api.index(load_config(config), faiss=faiss, overwrite=overwrite)
    typer.echo(
        f"store {summary['store']}: {summary['rows']} rows x {summary['dim']} dims in {summary['shards']} shards "
        f"({summary['shards_computed']} computed, {summary['shards_reused']} reused), "
        f"{summary['bytes'] / 2**20:.1f} MiB"
    )
    if summary.get("rows_per_s"):
        typer.echo(f"featurized at {summary['rows_per_s']:.1f} rows/s")
    if "faiss" in summary:
        f = summary["faiss"]
        rec = next((v for k, v in f.items() if k.startswith("recall_at_")), None)
        typer.echo(f"faiss {f['kind']} index: recall@10 vs exact {rec:.3f}" if rec is not None else f"faiss {f['kind']}")
    typer.echo(f"summary: {Path(summary['store']) / 'index_summary.json'}")
