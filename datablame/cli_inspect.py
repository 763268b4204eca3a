"""`datablame inspect`: plot one layer's fitted curvature factors (seed 000)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from datablame.cli import ConfigOpt, app, friendly


@app.command()
@friendly
def inspect(
    config: ConfigOpt,
    layer: Annotated[str, typer.Option(help="module name, unique suffix (layers.1.mlp.down_proj) or regex")],
    kind: Annotated[str, typer.Option(help="factors to fit or reuse: ekfac, kfac or diagonal")] = "ekfac",
    out: Annotated[Path | None, typer.Option(help="output directory (default: <run>/inspect)")] = None,
    damping: Annotated[float | None, typer.Option(help="damping line to draw (default: the method's)")] = None,
) -> None:
    """Lambda-matrix heatmap and sorted-lambda plot (symlog) of one layer's EKFAC/K-FAC factors."""
    from datablame import api
    from datablame.api import load_config

    t0 = time.perf_counter()
    paths = api.inspect(load_config(config), layer, kind=kind, out_dir=out, damping=damping)
    s = json.loads(paths["summary"].read_text(encoding="utf-8"))
    typer.echo(
        f"{s['kind']} factors of {s['module']}: lambda {s['shape'][0]} x {s['shape'][1]}, "
        f"min {s['min']:.3g}, max {s['max']:.3g}, mean {s['mean']:.3g}; "
        f"{s['values_above_damping']} of {s['values']} values above the damping {s['damping']:.3g}"
    )
    if "kfac_vs_ekfac_spearman" in s:
        typer.echo(f"Spearman of K-FAC vs EKFAC eigenvalues: {s['kfac_vs_ekfac_spearman']:.3f}")
    typer.echo(f"factors: {paths['factors']} ({time.perf_counter() - t0:.1f} s in all, fitting or reusing them included)")
    for key in ("heatmap", "sorted", "summary"):
        typer.echo(f"{key}: {paths[key]}")
