"""`datablame serve`: the HTTP API and web page over one trained run, and its tokens.

    datablame serve --config run.yaml                   # http://127.0.0.1:8765
    datablame serve token create --config run.yaml      # prints a new API token once

The server itself lives in `datablame.serve`, the layer between `api` (which it calls) and the
CLI (which starts it); it is imported only when the command runs, so the CLI starts without
fastapi installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datablame.cli import app, friendly
from datablame.errors import DatablameError

serve_app = typer.Typer(add_completion=False, invoke_without_command=True,
                        help="Serve attribution over HTTP for a trained run (API + web page).")
token_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API tokens of `datablame serve`.")
serve_app.add_typer(token_app, name="token")
app.add_typer(serve_app, name="serve")

OptionalConfig = Annotated[Path | None, typer.Option("--config", "-c", help="run YAML (see `datablame init`)")]


def _server():
    try:
        from datablame.serve import server
    except ImportError as err:
        raise DatablameError(f"`datablame serve` needs fastapi and uvicorn ({err})",
                             "pip install 'datablame[serve]' (scripts/setup.sh installs it)") from None
    return server


@serve_app.callback()
@friendly
def serve(
    ctx: typer.Context,
    config: OptionalConfig = None,
    host: Annotated[str | None, typer.Option(help="address to bind (default serve.host: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default serve.port: 8765)")] = None,
) -> None:
    """Load the trained run (and its feature store) once and answer attribution queries over HTTP:
    POST /v1/attributions, GET /v1/jobs/{id}, /v1/attributions/{id}, /v1/rows/{id}, /v1/methods,
    /healthz, /metrics, /docs, and the web page at /."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise DatablameError("`datablame serve` needs the run's config", "pass --config run.yaml")
    from datablame.api import load_config

    cfg = load_config(config)
    where = f"http://{host or cfg.serve.host}:{cfg.serve.port if port is None else port}/"
    typer.echo(f"serving {cfg.output.dir} at {where} (Ctrl-C stops)")
    _server().run_server(cfg, host=host, port=port)


@token_app.command("create")
@friendly
def token_create(
    config: OptionalConfig = None,
    name: Annotated[str, typer.Option(help="a label for the token (who or what uses it)")] = "default",
    rate_limit: Annotated[int | None, typer.Option(
        help="this token's requests a minute (default serve.rate_limit_per_minute)")] = None,
) -> None:
    """Create an API token: printed once; only its hash is kept (<run>/serve/tokens.json)."""
    if config is None:
        raise DatablameError("`datablame serve token create` needs the run's config", "pass --config run.yaml")
    from datablame.api import load_config

    typer.echo(_server().new_token(load_config(config), name, rate_limit))
