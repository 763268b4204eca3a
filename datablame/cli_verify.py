"""`datablame verify` and `datablame lds`: prove attributions by retraining (seed 001)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datablame.cli import ConfigOpt, app, friendly
from datablame.errors import DatablameError

NumCpus = Annotated[int | None, typer.Option(help="CPUs of the local Ray instance (default: config, else all)")]
Address = Annotated[str | None, typer.Option(help="join a Ray cluster ('auto', 'ray://host:10001')")]
Serial = Annotated[bool, typer.Option(help="train one job after another in this process, without Ray")]


ONE_SEED_NOTE = ("— : the interval and p-value need >= 2 seeds (verify.seeds or --seeds, e.g. 0,1,2); "
                 "with one seed the verdict asks for an effect above two control spreads")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if x != x:  # nan
            return "—"
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def parse_int_list(text: str | None) -> list[int] | None:
    """'1,5,10' -> [1, 5, 10]; None stays None."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DatablameError(f"{text!r} is not a comma-separated list of integers", "e.g. --k 1,5,10") from None


def parse_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [x.strip() for x in text.split(",") if x.strip()]


@app.command()
@friendly
def verify(
    config: ConfigOpt,
    result: Annotated[Path | None, typer.Option(help="attribution results.json (default: <run>/attribution)")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (default: all in the result)")] = None,
    queries: Annotated[str | None, typer.Option(help="comma-separated query ids (default: all)")] = None,
    k: Annotated[str | None, typer.Option(help="comma-separated k values, e.g. 1,5,10")] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated training seeds, e.g. 0,1,2,3,4")] = None,
    controls: Annotated[int | None, typer.Option(help="random-k control draws per seed and k")] = None,
    strategy: Annotated[str | None, typer.Option(help="remove (default), flip (label flip) or loo (leave-one-out)")] = None,
    num_cpus: NumCpus = None,
    address: Address = None,
    serial: Serial = False,
) -> None:
    """Retrain without each method's top-k rows vs k random rows vs nothing; effect, CI, verdict."""
    from rich.console import Console
    from rich.table import Table

    from datablame import api
    from datablame.api import load_config

    if strategy is not None and strategy not in ("remove", "flip", "loo"):
        raise DatablameError(f"unknown strategy {strategy!r}", "use remove, flip or loo")
    cfg = load_config(config, table_ok=True)
    if getattr(cfg.data, "kind", None) == "table":
        _verify_table(api.verify(cfg, methods=parse_names(methods)))
        return
    rep = api.verify(
        cfg, result_path=result, methods=parse_names(methods), queries=parse_names(queries),
        ks=parse_int_list(k), seeds=parse_int_list(seeds), controls=controls, strategy=strategy,
        num_cpus=num_cpus, address=address, serial=serial,
    )
    console = Console()
    d = rep.data
    if d["kind"] == "leave_one_out":
        t = Table(title=f"leave-one-out: {d['rows']} rows x {len(d['seeds'])} seeds vs method scores")
        for col in ("method", "Spearman (mean over queries)", "CI", "top-10 overlap"):
            t.add_column(col)
        for m, c in d["comparisons"].items():
            s = c["spearman"]
            ov = next((v for key, v in c.items() if key.startswith("top")), None)
            t.add_row(m, _fmt(s["mean"]), f"[{_fmt(s['low'])}, {_fmt(s['high'])}]", _fmt(ov))
        console.print(t)
        if d.get("split_half_reliability"):
            r = d["split_half_reliability"]
            typer.echo(f"LOO split-half reliability (Spearman, ceiling): {_fmt(r['mean'])} [{_fmt(r['low'])}, {_fmt(r['high'])}]")
    else:
        t = Table(title=f"verify ({d['strategy']}): top-k vs {d['settings']['controls']} random-k draws, "
                        f"{len(d['settings']['seeds'])} seeds; effect = extra loss rise (nats/token)")
        for col in ("method", "k", "query", "effect", f"{int(d['settings']['confidence'] * 100)}% CI", "p",
                    "output changed", "similarity", "verdict"):
            t.add_column(col)
        for r in d["per_query"]:
            e = r["effect"]
            t.add_row(r["method"], str(r["k"]), r["query_id"], _fmt(e["mean"]), f"[{_fmt(e['low'])}, {_fmt(e['high'])}]",
                      _fmt(r["p_value"], 2), f"{r['top']['changed']:.0%}", _fmt(r["top"]["similarity"], 2), r["verdict"])
        for s in d["summary"]:
            e = s["effect"]
            t.add_row(s["method"], str(s["k"]), f"all {s['queries']}", _fmt(e["mean"]),
                      f"[{_fmt(e['low'])}, {_fmt(e['high'])}]", _fmt(s["p_value"], 2), "", "",
                      ", ".join(f"{v} {n}" for n, v in s["verdicts"].items() if v), style="bold")
        if len(d["settings"]["seeds"]) < 2:
            t.caption = ONE_SEED_NOTE
        console.print(t)
    des = d["design"]
    typer.echo(f"trainings: {des.get('trained')} new, {des.get('reused')} reused; wall {d['timing']['wall_s']:.0f} s")
    for kind, p in rep.paths.items():
        typer.echo(f"{kind}: {p}")
    api.raise_if_methods_failed(rep)


def _verify_table(rep) -> None:
    """The table run's checks (tabular_verify.json): LOO agreement and the removal test per method."""
    from rich.console import Console
    from rich.table import Table

    d = rep.data
    console = Console()
    if "loo" in d:
        lo = d["loo"]
        t = Table(title=f"exact leave-one-out: {lo['retrainings']} retrainings, {d['queries']} queries")
        for col in ("method", "Spearman", "Pearson", "top-k overlap"):
            t.add_column(col)
        for m, v in lo["per_method"].items():
            ov = next(x for key, x in v.items() if key.startswith("top"))
            t.add_row(m, _fmt(v["spearman"]), _fmt(v["pearson"]), _fmt(ov))
        console.print(t)
    if "removal" in d:
        t = Table(title=f"removal test: top-k vs random-k rows; effect = extra query-loss rise ({d['loss_unit']})")
        for col in ("method", "k", "seeds", "effect", "95% CI"):
            t.add_column(col)
        for m, v in d["removal"].items():
            t.add_row(m, str(v["k"]), str(v["seeds"]), _fmt(v["effect"]), f"[{_fmt(v['effect_low'])}, {_fmt(v['effect_high'])}]")
        console.print(t)
    if "lds" in d:
        ld = d["lds"]
        t = Table(title=f"LDS: {ld['subsets']} retrainings on {ld['fraction']:.0%} of the train rows; Spearman of "
                        "summed scores vs -loss per query")
        for col in ("method", "LDS", "95% CI", "undefined"):
            t.add_column(col)
        for m, v in ld["per_method"].items():
            t.add_row(m, _fmt(v["mean"]), f"[{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]", str(v["undefined"]))
        console.print(t)
    for kind, p in rep.paths.items():
        typer.echo(f"{kind}: {p}")
    for m, e in d.get("method_errors", {}).items():
        typer.secho(f"{m} failed: {e}", fg="red", err=True)


@app.command()
@friendly
def lds(
    config: ConfigOpt,
    methods: Annotated[str | None, typer.Option(help="comma-separated methods (default: lds.methods, else attribution)")] = None,
    subsets: Annotated[int | None, typer.Option(help="number of subset models M (default: lds.num_subsets)")] = None,
    alpha: Annotated[float | None, typer.Option(help="fraction of rows per subset (default: lds.alpha)")] = None,
    num_cpus: NumCpus = None,
    address: Address = None,
    serial: Serial = False,
) -> None:
    """Linear datamodeling score of each method over M retrained subset models (cached, resumable)."""
    from rich.console import Console
    from rich.table import Table

    from datablame import api
    from datablame.api import load_config

    cfg = load_config(config)
    rep = api.lds(cfg, parse_names(methods), num_subsets=subsets, alpha=alpha,
                  num_cpus=num_cpus, address=address, serial=serial)
    d = rep.data
    st = d["settings"]
    conf = int(st["confidence"] * 100)
    t = Table(title=f"LDS: {st['num_subsets']} subset models of {st['subset_rows']}/{st['rows']} rows, "
                    f"{st['queries']} queries")
    for col in ("method", "LDS", f"{conf}% CI", "queries"):
        t.add_column(col)
    for r in d["table"]:
        if "error" in r:
            t.add_row(r["method"], "error", r["error"][:60], "")
        else:
            t.add_row(r["method"], _fmt(r["lds"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", str(r["queries"]))
    Console().print(t)
    des = d["design"]
    typer.echo(f"subset models: {des['trained']} trained, {des['reused']} reused; wall {d['timing']['wall_s']:.0f} s")
    for kind, p in rep.paths.items():
        typer.echo(f"{kind}: {p}")
    api.raise_if_methods_failed(rep)
