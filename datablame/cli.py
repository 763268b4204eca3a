"""The `datablame` command: every stage is a subcommand reading one YAML config."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from datablame.error_paths import FILE_AND_INPUT_ERRORS, as_datablame_error
from datablame.errors import DatablameError
from datablame.layout import RunLayout
from datablame.templates import EXAMPLES

if TYPE_CHECKING:
    from datablame.config import RunConfig

# Messages of libraries that tell a datablame user nothing, silenced here, before the commands
# import those libraries (they do so lazily). Our own warnings and logs (datablame.*) are untouched.
QUIET_LOGGERS = {
    "faiss.loader": logging.WARNING,  # "Loading faiss with AVX512 support." (INFO; our root logs INFO)
    "ray._private.authentication.authentication_token_setup": logging.ERROR,  # token-auth banner of ray.init
    "ray._private.worker": logging.WARNING,  # "Started a local Ray instance."
}
QUIET_FUTURE_WARNINGS = r"(transformers|peft|accelerate|sentence_transformers)(\..*)?$"  # their deprecations


def _quiet_libraries() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", category=FutureWarning, module=QUIET_FUTURE_WARNINGS)


_quiet_libraries()

app = typer.Typer(add_completion=False, no_args_is_help=True, help="git blame for model behaviour.")


def _print_version(value: bool) -> None:
    if value:
        from datablame import api

        typer.echo(f"datablame {api.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """git blame for model behaviour."""

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="run YAML (see `datablame init`)")]
OptionOpt = Annotated[list[str] | None, typer.Option(
    help="METHOD.KEY=VALUE: a method option over attribution.options (repeatable; value read as YAML)")]


def parse_options(items: list[str]) -> dict[str, dict]:
    """`name.key=value` (value parsed as YAML) -> {name: {key: value}} (`--option`, repeatable)."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        head, sep, raw = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not name or not key:
            raise DatablameError(f"--option {item!r} is not NAME.KEY=VALUE",
                                 "e.g. --option ekfac.damping=0.001 or --option bergson.unit_normalize=false")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise DatablameError(f"--option {item!r}: the value is not YAML ({str(err).splitlines()[0]})",
                                 "quote it, e.g. --option 'ekfac.modules=[a, b]'") from None
        out.setdefault(name.strip(), {})[key.strip()] = value
    return out


def with_options(cfg: RunConfig, options: dict[str, dict]) -> RunConfig:
    """`cfg` with `options` ({method: {key: value}}) laid over `attribution.options`, checked
    like the config's own (an unknown method or option, or a wrong type, names the flag)."""
    if not options:
        return cfg
    from datablame import api

    merged = {name: dict(opts) for name, opts in cfg.attribution.options.items()}
    for name, opts in options.items():
        merged.setdefault(name, {}).update(opts)
    new = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"options": merged})})
    try:
        api.check_options(new)
    except DatablameError as err:
        raise DatablameError(f"--option: {err.problem}", err.fix) from None
    return new


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
        columns = os.environ.get("COLUMNS")
        if columns is None and not sys.stdout.isatty():
            os.environ["COLUMNS"] = str(PIPED_COLUMNS)  # rich tables in full, not cut at 80 columns
        try:
            return fn(*args, **kwargs)
        except DatablameError as err:
            _report(err)
        except FILE_AND_INPUT_ERRORS as err:
            logging.getLogger("datablame").debug("reported as a one-line error", exc_info=True)
            _report(as_datablame_error(err))
        finally:
            if columns is None:
                os.environ.pop("COLUMNS", None)

    return wrapper


# Width of the console when stdout is a pipe or file: rich tables are as wide as their cells
# (they never stretch), so this only stops rich from cutting them to its 80-column default.
PIPED_COLUMNS = 1000


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
    option: OptionOpt = None,
) -> None:
    """Rank the training rows responsible for each query's completion.

    `datablame methods` lists every method with its family, sign, unit, cost and the options it
    takes under `attribution.options.<method>` (or `--option METHOD.KEY=VALUE`)."""
    from datablame import api
    from datablame.api import load_config
    from datablame.report import print_table

    cfg = with_options(load_config(config, table_ok=True), parse_options(option or []))
    methods = [m.strip() for m in method.split(",")] if method else None
    result, paths = api.attribute(cfg, methods=methods)
    print_table(result)
    _print_outputs(result, paths)


@app.command()
@friendly
def run(config: ConfigOpt) -> None:
    """The whole pipeline: corpus -> fine-tune -> attribute -> report (a table config: train the
    model and attribute its test rows)."""
    from datablame import api
    from datablame.api import load_config
    from datablame.config_tabular import TabularRunConfig
    from datablame.report import print_table

    cfg = load_config(config, table_ok=True)
    if isinstance(cfg, TabularRunConfig):  # tables train in seconds: attribute trains (or loads) the model
        result, paths = api.attribute(cfg)
    else:
        outcome = api.run(cfg)
        result, paths = outcome.result, outcome.paths
    print_table(result)
    _print_outputs(result, paths)


@app.command()
@friendly
def demo(
    output_dir: Annotated[str, typer.Option(help="run directory")] = "runs/demo",
    overwrite: bool = False,
    tabular: Annotated[bool, typer.Option("--tabular", help="XGBoost on scikit-learn's breast-cancer table "
                                          "(no download, seconds); run directory runs/demo-table")] = False,
) -> None:
    """Planted facts -> tiny model from scratch -> attribution -> recall@10 vs ground truth."""
    from datablame import api
    from datablame.report import print_table

    t0 = time.perf_counter()
    if tabular:
        result, paths = api.demo_table("runs/demo-table" if output_dir == "runs/demo" else output_dir, overwrite)
        print_table(result, max_rows=5)
        _print_outputs(result, paths)
        typer.echo(f"tabular demo finished in {time.perf_counter() - t0:.0f} s; prove it by retraining: "
                   f"datablame verify --config {RunLayout(paths['json'].parent.parent).resolved_config}")
        return
    outcome = api.demo(output_dir, overwrite)
    print_table(outcome.result, max_rows=10 if len(outcome.result.queries) <= 2 else 5)
    _print_outputs(outcome.result, outcome.paths)
    typer.echo(f"demo finished in {time.perf_counter() - t0:.0f} s")


@app.command("methods")
@friendly
def methods_(
    names: Annotated[list[str] | None, typer.Argument(help="methods to show (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON list, one object per method")] = False,
    tabular: Annotated[bool, typer.Option("--tabular", help="the methods for tables (data.kind: table)")] = False,
) -> None:
    """List the attribution methods: family, sign, unit, cost and options (type, default, meaning)."""
    import json

    from datablame import api

    if tabular:
        table_methods = api.describe_tabular_methods()
        if names:
            unknown = sorted(set(names) - {d["name"] for d in table_methods})
            if unknown:
                raise DatablameError(f"unknown tabular method(s) {unknown}",
                                     f"choose from {[d['name'] for d in table_methods]}")
            table_methods = [d for d in table_methods if d["name"] in names]
        typer.echo(json.dumps(table_methods, indent=2) if as_json else _tabular_methods_text(table_methods))
        return
    described = api.describe_methods()
    if names:
        unknown = sorted(set(names) - {d["name"] for d in described})
        if unknown:
            raise DatablameError(f"unknown method(s) {unknown}", f"choose from {[d['name'] for d in described]}")
        described = [d for d in described if d["name"] in names]
    typer.echo(json.dumps(described, indent=2) if as_json else _methods_text(described))
    if not as_json and not names:
        typer.echo("\ntabular methods (data.kind: table; `datablame methods --tabular` for sign and unit): "
                   + ", ".join(d["name"] for d in api.describe_tabular_methods()))


def _tabular_methods_text(described: list[dict]) -> str:
    lines = []
    for d in described:
        lines += [f"{d['name']}  [needs: {d['needs']} model; {', '.join(d['tasks'])}]  ({d['module'].replace('.', '/')}.py)",
                  f"  sign: {d['sign']}", f"  unit: {d['unit']}", f"  label noise: ranked by {d['noise']}",
                  f"  options (attribution.options.{d['name']}): {', '.join(d['options']) or 'none'}", ""]
    return "\n".join(lines).rstrip("\n")


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
_COMMAND_MODULES = ("datablame.cli_verify", "datablame.cli_bench", "datablame.cli_index", "datablame.cli_inspect",
                    "datablame.cli_evaluate", "datablame.cli_serve", "datablame.cli_diff", "datablame.cli_plan")
for _name in _COMMAND_MODULES:
    try:
        __import__(_name)
    except ModuleNotFoundError as _err:
        if _err.name != _name:
            raise


def main() -> None:  # pragma: no cover
    sys.exit(app())
