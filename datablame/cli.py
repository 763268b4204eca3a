"""The `datablame` command: every stage is a subcommand reading one YAML config."""

from __future__ import annotations

import logging
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from datablame.error_paths import FILE_AND_INPUT_ERRORS, as_datablame_error
from datablame.errors import DatablameError
from datablame.templates import EXAMPLES

app = typer.Typer(add_completion=False, no_args_is_help=True, help="git blame for model behaviour.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="run YAML (see `datablame init`)")]


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is now, not the stream that was current when logging was
    set up: several commands in one process (tests, notebooks with CliRunner) each capture
    stderr, and a handler holding a closed stream prints a 'Logging error' traceback."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        """Ignored: StreamHandler.__init__ assigns a stream, but `stream` always looks sys.stderr up."""


def _log_to_stderr() -> None:
    # a handler some library bound to an earlier command's captured stderr (closed since)
    # would print a 'Logging error' traceback: point it at the current one
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and getattr(h.stream, "closed", False):
                h.stream = sys.stderr  # not setStream: it flushes the closed stream first
    root = logging.getLogger()
    if not any(isinstance(h, _CurrentStderrHandler) for h in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)


def friendly(fn):
    """Bad input or a file problem -> one clear line on stderr and exit code 2, no traceback.

    Besides DatablameError, the errors that bad files and paths raise anywhere below
    (`as_datablame_error`: OSError, JSON/YAML/Unicode decode errors, EOFError, re.error,
    pydantic ValidationError) are reported the same way, naming the file or field.
    """

    @wraps(fn)
    def wrapper(*args, **kwargs):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _log_to_stderr()
        try:
            return fn(*args, **kwargs)
        except DatablameError as err:
            _report(err)
        except FILE_AND_INPUT_ERRORS as err:
            logging.getLogger("datablame").debug("reported as a one-line error", exc_info=True)
            _report(as_datablame_error(err))

    return wrapper


def _report(err: DatablameError):
    typer.secho(f"error: {err.problem}", fg="red", err=True)
    if err.fix:
        typer.secho(f"fix: {err.fix}", fg="yellow", err=True)
    raise typer.Exit(2) from None


@app.command()
@friendly
def init(
    path: Annotated[Path, typer.Argument(help="where to write the example config")] = Path("run.yaml"),
    example: Annotated[str, typer.Option(help=f"one of {sorted(EXAMPLES)}")] = "default",
    force: bool = False,
) -> None:
    """Write a commented example config."""
    from datablame import api

    api.write_example(path, example, force=force)
    typer.echo(f"wrote {path}; edit it, then: datablame run --config {path}")


@app.command()
@friendly
def train(config: ConfigOpt) -> None:
    """Fine-tune the model on the corpus (resumes from the last checkpoint)."""
    from datablame import api
    from datablame.api import load_config

    cfg = load_config(config)
    loaded = api.train(cfg)
    typer.echo(f"trained model: {loaded.source}")


@app.command()
@friendly
def attribute(
    config: ConfigOpt,
    method: Annotated[str | None, typer.Option(help="comma-separated methods (default: from config); "
                                                     "`datablame methods` lists them")] = None,
) -> None:
    """Rank the training rows responsible for each query's completion.

    `datablame methods` lists every method with its family, sign, unit, cost and the options it
    takes under `attribution.options.<method>`."""
    from datablame import api
    from datablame.api import load_config
    from datablame.report import print_table

    cfg = load_config(config)
    methods = [m.strip() for m in method.split(",")] if method else None
    result, paths = api.attribute(cfg, methods=methods)
    print_table(result)
    _print_outputs(result, paths)


@app.command()
@friendly
def run(config: ConfigOpt) -> None:
    """The whole pipeline: corpus -> fine-tune -> attribute -> report."""
    from datablame import api
    from datablame.api import load_config
    from datablame.report import print_table

    outcome = api.run(load_config(config))
    print_table(outcome.result)
    _print_outputs(outcome.result, outcome.paths)


@app.command()
@friendly
def demo(
    output_dir: Annotated[str, typer.Option(help="run directory")] = "runs/demo",
    overwrite: bool = False,
) -> None:
    """Planted facts -> tiny model from scratch -> attribution -> recall@10 vs ground truth."""
    from datablame import api
    from datablame.report import print_table

    t0 = time.perf_counter()
    outcome = api.demo(output_dir, overwrite)
    print_table(outcome.result, max_rows=10 if len(outcome.result.queries) <= 2 else 5)
    _print_outputs(outcome.result, outcome.paths)
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s")


@app.command("methods")
@friendly
def methods_(
    names: Annotated[list[str] | None, typer.Argument(help="methods to show (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON list, one object per method")] = False,
) -> None:
    """List the attribution methods: family, sign, unit, cost and options (type, default, meaning)."""
    import json

    from datablame import api

    described = api.describe_methods()
    if names:
        unknown = sorted(set(names) - {d["name"] for d in described})
        if unknown:
            raise DatablameError(f"unknown method(s) {unknown}", f"choose from {[d['name'] for d in described]}")
        described = [d for d in described if d["name"] in names]
    typer.echo(json.dumps(described, indent=2) if as_json else _methods_text(described))


def _methods_text(described: list[dict]) -> str:
    import json

    lines = []
    for d in described:
        lines += [f"{d['name']}  [{d['family']}]  ({d['module'].replace('.', '/')}.py)",
                  f"  sign: {d['sign']}", f"  unit: {d['unit']}", f"  cost: {d['cost']}"]
        if not d["options"]:
            lines += ["  options: none", ""]
            continue
        lines.append(f"  options (attribution.options.{d['name']}):")
        rows = [(o["name"], o["type"], json.dumps(o["default"]), o["description"]) for o in d["options"]]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += ["    " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _print_outputs(result, paths) -> None:
    if result.retrieval:  # attribution.retrieval.enabled: the cascade's stages
        from datablame.report import format_stage_table

        typer.echo(format_stage_table(result.retrieval))
    ev = result.evaluation
    if ev:
        k = ev["k"]
        for m, v in ev["per_method"].items():
            typer.secho(
                f"{m}: recall@{k} = {v[f'recall@{k}']:.3f}, mAP = {v['mAP']:.3f} "
                f"over {v['queries']} planted-fact queries",
                fg="green",
                bold=True,
            )
    for kind, p in paths.items():
        typer.echo(f"{kind}: {p}")


# Stage commands that live in their own modules (each registers on `app` with
# `@app.command()` + `@friendly`): verify/lds, bench, index, inspect.
_COMMAND_MODULES = ("datablame.cli_verify", "datablame.cli_bench", "datablame.cli_index", "datablame.cli_inspect")
for _name in _COMMAND_MODULES:
    try:
        __import__(_name)
    except ModuleNotFoundError as _err:
        if _err.name != _name:
            raise


def main() -> None:  # pragma: no cover
    sys.exit(app())
