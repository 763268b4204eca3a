"""`datablame plan`: peak memory and time per stage before a run, and what fits a memory budget."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from datablame.cli import ConfigOpt, app, friendly


@app.command()
@friendly
def plan(
    config: ConfigOpt,
    memory_budget: Annotated[str | None, typer.Option(
        help="memory to fit (e.g. 16GB, 512MB): recommends projection, batch size and precision")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: model.device)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the plan as JSON")] = False,
) -> None:
    """Estimate each stage's peak memory and time (train, featurize, factors, scores), the store's
    size and the query latency from the model's shape, the corpus' token counts and a few seconds
    of calibration on the device."""
    from datablame.api_plan import format_plan, plan_from_file

    result = plan_from_file(config, memory_budget=memory_budget, device=device)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_plan(result))
