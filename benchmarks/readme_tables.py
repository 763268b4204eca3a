"""Regenerate the README's generated sections from benchmarks/results/ and the method registry.

Each section sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in README.md; this
script replaces what is between the markers, so the README never states a figure that is not
in a results file. A generator whose results file is absent returns None and the marker keeps
its old text. Every table names the machine, the date and the command that produced it as far
as its JSON records them.

    .venv/bin/python benchmarks/readme_tables.py            # rewrite README.md in place
    .venv/bin/python benchmarks/readme_tables.py --check    # exit 1 if README.md is out of date

Sources: the method table comes from `datablame.methods.REGISTRY` (no JSON); Markdown
sections written by other commands (`datablame bench ... --results-dir benchmarks/results`
writes `bench_<corpus>.md`; `<name>.readme.md` files) are included verbatim, with headings
moved to level 3 and relative image links pointed at benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _readme_arch import architectures_table
from _readme_md import md_file_section
from _readme_truth import truth_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_REL = "benchmarks/results"


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _f(x: Any, digits: int = 3) -> str:
    """A number for a table; '—' for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _signed(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.{digits}f}"


def _ci(low: Any, high: Any, digits: int = 3) -> str:
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "—"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _secs(s: Any) -> str:
    if s is None:
        return "—"
    return f"{s:.1f} s" if s < 100 else f"{s:,.0f} s ({s / 60:.1f} min)"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


def _cores_and_load(start: dict) -> str:
    """'2 CPU cores, load average 10.1 at start (...)' from a machine_facts() record."""
    cores, load = start.get("cpu_count"), start.get("loadavg")
    if not cores and not load:
        return "machine not recorded"
    text = f"{cores or '?'} CPU cores"
    if load:
        text += f", load average {load[0]:.1f} at start"
        if cores and load[0] > cores:
            text += " (shared with other jobs: walls inflated)"
    return text


def _machine(cores: Any, device: Any, load_start: Any, load_end: Any = None) -> str:
    """Where a timing was measured, from what its JSON recorded (never guessed): '2 CPU cores,
    device cpu, load average 1.1 at start -> 2.0 at end', naming what was not recorded."""
    if not cores and not device and not load_start:
        return "machine not recorded"
    parts = [f"{cores} CPU cores" if cores else "CPU count not recorded",
             f"device {device}" if device else "device not recorded"]
    if load_start:
        load = f"load average {load_start[0]:.1f} at start" + (f" → {load_end[0]:.1f} at end" if load_end else "")
        if cores and max(load_start[0], (load_end or [0])[0]) > cores:
            load += " (shared with other jobs: walls inflated)"
        parts.append(load)
    else:
        parts.append("load not recorded")
    return ", ".join(parts)


def _provenance(command: str | None, date: str | None, machine: str | None, reproduce: str | None = None) -> str:
    """One line: how to rerun it, when, where."""
    parts = []
    if reproduce:
        parts.append(f"Reproduce: `{reproduce.strip()}`" + (f" (runs `{command.strip()}`)" if command else ""))
    elif command:
        parts.append(f"Command: `{command.strip()}`")
    if date:
        parts.append(f"date {date[:10]}")
    if machine:
        parts.append(machine)
    return "; ".join(parts) + "."


def _plot(name: str, alt: str) -> str | None:
    return f"![{alt}]({RESULTS_REL}/{name})" if (RESULTS / name).is_file() else None


# --- speed ---------------------------------------------------------------------------------


def featurize_table() -> str | None:
    d = _load("featurize_cpu.json")
    if d is None:
        return None
    r, m, rows = d["ratios"], d["model"], d["rows"]
    bs = str(r["batch_size"])
    res = d["results"][bs]
    head = (
        f"{m['layers']}-layer hidden-{m['hidden']} Llama ({m['params'] / 1e6:.1f} M params, {m['dtype']}), "
        f"{rows['tokens']} tokens/row, MLP gate/up/down_proj, k_in = k_out = {d['featurizer']['projection']['k_in']}, "
        f"batch {bs}, {d['machine']['cpu_count']} CPU cores, medians of {d['settings']['repeats']} interleaved repeats "
        f"({d['date'][:10]}). Reproduce: `.venv/bin/python benchmarks/featurize.py`."
    )
    lines = [head, "", "| measured in one run | rows/s | ratio |", "|---|---|---|"]
    lines.append(f"| training step (fwd + bwd + AdamW) | {res['train']['rows_per_s']:.1f} | 1 |")
    lines.append(f"| activation-only fwd + bwd (the bound) | {res['bound']['rows_per_s']:.1f} | – |")
    lines.append(
        f"| **datablame featurize** | **{res['ours']['rows_per_s']:.1f}** | cost ratio **{r['featurize_cost_ratio']:.2f}** "
        f"(time ÷ training step); **{r['fraction_of_bound']:.3f}** of the bound |"
    )
    if "bergson" in res:
        lines.append(
            f"| bergson 2.5.1 projected collection | {res['bergson']['rows_per_s']:.1f} | "
            f"ours ÷ bergson **{r['ours_over_bergson_best']:.2f}** |"
        )
    lines.append("")
    lines.append(
        f"Peak memory: featurize ÷ training step {r['peak_memory_ratio']:.2f} "
        f"({r['peak_memory_ratio_incl_adamw_state']:.2f} counting AdamW state); ours ÷ bergson "
        f"{r['peak_memory_ratio_vs_bergson']:.2f}. GPU (`--device cuda`): "
        + ("see featurize_cuda.json." if (RESULTS / "featurize_cuda.json").is_file() else "not run yet (no GPU lent).")
    )
    return "\n".join(lines)


def query_table() -> str | None:
    d = _load("query_latency.json")
    if d is None:
        return None
    rows = d["rows"]
    dim = rows[0]["dim"]
    lines = [
        f"Top-10 for one query over synthetic {dim}-d fp16 features ({d['setup']['metric']}), "
        f"{d['machine']['cpu_count']} CPU cores ({d['date'][:10]}). Reproduce: `.venv/bin/python benchmarks/query.py`.",
        "",
        "| rows | method | p50 ms | p95 ms | recall@10 vs exact |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_rows']:,} | {r['method']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall_at_10']:.3f} |"
        )
    return "\n".join(lines)


def cascade_table() -> str | None:
    d = _load("cascade_cpu.json")
    if d is None:
        return None
    c, ex, pr = d["corpus"], d["exhaustive"], d["planted_recall_at_10"]
    mach = d["machine"]
    lines = [
        f"{c['rows']:,} planted-fact rows, {c['queries']} queries, 2-layer tiny Llama; exhaustive = featurize every "
        f"row and query, gradient cosine over all rows: **{ex['seconds']:.1f} s** "
        f"({ex['seconds_per_query_amortized']:.3f} s/query amortised). Text indices (MiniLM + BM25) are built once "
        f"per corpus by `datablame index` and not counted. Recall = fraction of the exhaustive gradient top-10 the "
        f"cascade keeps; planted recall@10 against the ground truth.",
        "",
        *_table(
            ["stages (embedding_k / bm25_k)", "rows featurized", "s/query", "speed-up", "recall of exhaustive top-10",
             "planted recall@10"],
            [[r["label"], f"{r['rows_featurized']:,}", f"{r['cascade_s_per_query']:.3f}",
              f"{r['speedup_vs_exhaustive']:.2f}×", _f(r["final_recall_of_exhaustive_top10"]),
              _f(r["planted_recall_at_10"])] for r in d["configs"]],
        ),
        "",
        f"Planted recall@10 of single methods over all rows: exhaustive gradient cosine "
        f"{_f(pr['exhaustive_grad_cosine'])}, BM25 alone {_f(pr['bm25_alone'])}, MiniLM cosine alone "
        f"{_f(pr['embedding_cosine_alone'])} (these queries restate their rows' words, where lexical search is at "
        f"its best).",
    ]
    cold = d.get("single_query_cold")
    if cold:
        lines += ["", f"One query, cold (fresh re-ranker, default stages): median {cold['median_cascade_s']:.2f} s vs "
                      f"{cold['exhaustive_s_one_query']:.1f} s exhaustive."]
    other = d.get("other_processes_cpu_share")
    machine = f"{mach.get('cpu_count')} CPU cores ({mach.get('cpu')})" + (
        f", other processes used {other:.0%} of the CPU during the run" if other is not None else "")
    lines += ["", _provenance(d.get("command"), d.get("date"), machine)]
    plot = _plot("cascade_cpu.png", "cascade recall vs time")
    if plot:
        lines += ["", plot]
    return "\n".join(lines)


# --- methods -------------------------------------------------------------------------------


def methods_table() -> str | None:
    """Every registered method with its family, sign, unit, cost and options (`describe_all`, the
    source of `datablame methods`), grouped by family."""
    sys.path.insert(0, str(ROOT))
    try:
        from datablame.methods import describe_all
        from datablame.methods.base import FAMILIES, Method
    except ImportError as err:  # the README keeps its old table rather than failing
        print(f"methods table skipped: {err}", file=sys.stderr)
        return None
    described = sorted(describe_all(), key=lambda d: (FAMILIES.index(d["family"]), d["name"]))
    lines = [
        f"{len(described)} methods. Sign: higher = the row pushed the query's loss down (more responsible), unless "
        "the sign column says otherwise. Options go under `attribution.options.<name>` (listed with their "
        "defaults; `datablame methods` prints each one's type and meaning, `--json` for machines).",
        "",
        "| method | family | sign | unit | cost | options (default) |",
        "|---|---|---|---|---|---|",
    ]
    for d in described:
        path = d["module"].replace(".", "/") + ".py"
        sign = "default" if d["sign"] == Method.sign else d["sign"]
        options = ", ".join(f"`{o['name']}`: {json.dumps(o['default'])}" for o in d["options"]) or "none"
        lines.append(f"| [`{d['name']}`]({path}) | {d['family']} | {_cell(sign)} | {_cell(d['unit'])} | "
                     f"{_cell(d['cost'])} | {_cell(options)} |")
    return "\n".join(lines)


def demo_table() -> str | None:
    """`benchmarks/results/demo.json`: a copy of the demo's attribution/results.json, optionally
    with a `benchmark` block {command, wall_s, peak_rss_gb, cpu_count, device, loadavg_start/end}."""
    d = _load("demo.json")
    if d is None or not d.get("evaluation"):
        return None
    ev, b = d["evaluation"], d.get("benchmark", {})
    k = ev["k"]
    rows = [[m, _f(v.get(f"recall@{k}")), _f(v.get("mAP")), v.get("queries")] for m, v in ev["per_method"].items()]
    lines = _table(["method", f"recall@{k}", "mAP", "queries"], rows)
    extra = []
    if b.get("wall_s") is not None:
        extra.append(f"whole command **{_secs(b['wall_s'])}** wall")
    if b.get("peak_rss_gb") is not None:
        extra.append(f"peak RSS {b['peak_rss_gb']:.1f} GB")
    machine = _machine(b.get("cpu_count"), b.get("device"), b.get("loadavg_start"), b.get("loadavg_end"))
    lines += ["", (", ".join(extra) + ". " if extra else "")
              + _provenance(b.get("command") or "datablame demo", d.get("created"), machine)]
    return "\n".join(lines)


# --- agreement with peers ------------------------------------------------------------------


def ekfac_table() -> str | None:
    d = _load("ekfac_vs_kronfluence.json")
    if d is None:
        return None
    rows = [[r["setting"], _f(r["spearman"], 4), _f(r["spearman_per_query_mean"], 4), _f(r["pearson"], 4),
             _secs(r.get("seconds")), _f(r.get("peak_rss_mb"), 0)] for r in d["rows"]]
    ke, kk = d.get("kronfluence_ekfac", {}), d.get("kronfluence_kfac", {})
    m = d.get("machine", {})
    machine = f"{m.get('platform', '?')}, torch {m.get('torch', '?')}, {m.get('threads', '?')} threads"
    lines = [
        f"{d['what']}. Model: {d['model']}. Fisher: {d['settings']['fisher']}; damping: {d['settings']['damping']}.",
        "",
        *_table(["ours (setting)", "Spearman, all pairs", "Spearman, mean per query", "Pearson", "our time",
                 "our peak MiB"], rows),
        "",
        f"kronfluence itself: EKFAC {_secs(ke.get('seconds'))}, K-FAC {_secs(kk.get('seconds'))} (fit + score, "
        f"fresh factors).",
        "",
        _provenance(None, d.get("date"), machine, d.get("command")),
    ]
    return "\n".join(lines)


def trak_table() -> str | None:
    d = _load("trak_vs_traker.json")
    if d is None:
        return None
    rows = []
    for s in d["settings"]:
        if s.get("error"):
            rows.append([s["name"], _f(s.get("damping")), f"error: {s['error']}", "", "", ""])
            continue
        if "ours_vs_traker" in s:
            a, exact = s["ours_vs_traker"], None
            ours_t = _secs(s.get("ours_s"))
        else:
            a, exact = s["ours_32x32_vs_traker"], s.get("ours_exact_vs_traker")
            ours_t = "—"
        rows.append([s["name"], _f(s.get("damping"), 2), _f(a["spearman"], 4),
                     _f(exact["spearman"], 4) if exact else "(is exact)", ours_t, _secs(s.get("traker_s"))])
    m = d.get("machine", {})
    machine = f"{m.get('platform', '?')}, torch {m.get('torch', '?')}, {m.get('cpus', '?')} threads"
    lines = [
        "Same run as above (55 rows × 3 queries). Exact rows: one module, no projection on either side. Projected "
        "rows: 6 MLP modules, ours at the default 32×32 per module vs traker's dense projection; the "
        "\"ours exact\" column shows where a disagreement comes from (the projection, not the formulation). "
        "Spearman over all query × row pairs.",
        "",
        *_table(["setting", "damping", "ours vs traker", "ours exact vs traker", "our time", "traker time"], rows),
        "",
        _provenance(None, d.get("created") or d.get("date"), machine,
                    d.get("command") or "python benchmarks/trak_vs_traker.py"),
    ]
    return "\n".join(lines)


def convex_loo_table() -> str | None:
    d = _load("convex_loo.json")
    if d is None:
        return None
    p = d["problem"]
    rows = [[q["test_row"], _f(q["test_loss"]), _f(q["pearson"], 4), _f(q["spearman"], 4)] for q in d["per_query"]]
    m = d.get("machine", {})
    lines = [
        f"L2-regularised logistic regression on scikit-learn's digits (classes {p['classes'][0]} vs "
        f"{p['classes'][1]}, {p['n_train']} training rows, {p['features']} features, C = {p['C']}): exact-Hessian "
        f"influence (`datablame.curvature.hessian`, as `hessian_influence` uses) vs refitting without each of the "
        f"{d['rows_retrained']} rows. Pearson **{d['pearson']:.4f}**, Spearman **{d['spearman']:.4f}** (mean over "
        f"test rows; pooled: Pearson {d['pearson_pooled']:.4f}, Spearman {d['spearman_pooled']:.4f}); "
        f"{_secs(d.get('seconds'))} in all.",
        "",
        *_table(["test row", "its loss", "Pearson", "Spearman"], rows),
        "",
        _provenance(None, m.get("date"), f"{m.get('platform', '?')}, Python {m.get('python', '?')}",
                    d.get("command")),
    ]
    plot = _plot(d.get("plot", "convex_loo.png"), "influence vs leave-one-out")
    if plot:
        lines += ["", plot]
    return "\n".join(lines)


# --- retraining: LDS, removal, leave-one-out -----------------------------------------------


def _retrain_footer(d: dict, sweep: str, script: str, plot_name: str, alt: str) -> list[str]:
    """The closing lines of a retraining table (lds / verify / loo JSON): the sweep and the whole
    command's wall time, how to reproduce it, on which machine, and the plot."""
    b, timing = d.get("benchmark", {}), d.get("timing", {})
    lines = ["", f"{sweep}; whole command **{_secs(b.get('command_wall_s') or timing.get('wall_s'))}** wall.", "",
             _provenance(b.get("command"), d.get("created"), _cores_and_load(d.get("machine", {}).get("start", {})),
                         script)]
    plot = _plot(plot_name, alt)
    return lines + (["", plot] if plot else [])


def _lds_rows(d: dict) -> list[list[Any]]:
    rows = []
    secs = {m: v.get("seconds") for m, v in d.get("methods", {}).items()}
    for r in sorted(d["table"], key=lambda r: -(r.get("lds") if r.get("lds") is not None else -9)):
        if "error" in r:
            rows.append([f"`{r['method']}`", "error", _cell(r["error"][:80]), "", ""])
        else:
            rows.append([f"`{r['method']}`", _f(r["lds"]), _ci(r["ci_low"], r["ci_high"]), r["queries"],
                         _secs(secs.get(r["method"]))])
    return rows


def lds_table() -> str | None:
    d = _load("lds_demo.json")
    if d is None:
        return None
    st, t = d["settings"], d.get("timing", {})
    conf = int(st["confidence"] * 100)
    design = d.get("design", {})
    lines = [
        f"Demo corpus ({st['rows']} rows, {st['queries']} planted-fact queries), {st['num_subsets']} subset models "
        f"each trained on {st['subset_rows']} rows (α = {st['alpha']}). Per query: Spearman over the subset models "
        f"of (sum of the method's scores over the subset) vs (minus the subset model's completion loss); mean over "
        f"queries, {conf}% percentile-bootstrap CI over queries. Scoring time per method on the full run.",
        "",
        *_table(["method", "LDS", f"{conf}% CI", "queries", "scoring time"], _lds_rows(d)),
    ]
    sweep = (f"Sweep: {design.get('trained', '?')} models trained, {design.get('reused', 0)} reused "
             f"({design.get('runner', '?')}, {design.get('ray_cpus', '?')} CPUs), "
             f"{_secs(t.get('train_s_per_model'))} per model")
    lines += _retrain_footer(d, sweep, "python benchmarks/lds_demo.py", "lds_demo.png", "LDS per method")
    return "\n".join(lines)


def lds_example() -> str | None:
    """What `datablame lds` prints, rebuilt from lds_demo.json (top rows only)."""
    d = _load("lds_demo.json")
    if d is None:
        return None
    st = d["settings"]
    conf = int(st["confidence"] * 100)
    rows = [r for r in d["table"] if "error" not in r][:3]
    out = [f"$ {d.get('benchmark', {}).get('command', 'datablame lds --config run.yaml')}",
           f"LDS: {st['num_subsets']} subset models of {st['subset_rows']}/{st['rows']} rows, {st['queries']} queries",
           f"{'method':<14}{'LDS':>7}  {conf}% CI            queries"]
    out += [f"{r['method']:<14}{r['lds']:>7.3f}  {_ci(r['ci_low'], r['ci_high']):<18}{r['queries']:>4}" for r in rows]
    if len(d["table"]) > len(rows):
        out.append(f"... ({len(d['table']) - len(rows)} more methods)")
    des = d.get("design", {})
    out.append(f"subset models: {des.get('trained')} trained, {des.get('reused')} reused; "
               f"wall {d.get('timing', {}).get('wall_s', 0):.0f} s")
    return "```\n" + "\n".join(out) + "\n```\n\n(from `benchmarks/results/lds_demo.json`)"


def _verdicts(v: dict) -> str:
    return ", ".join(f"{n} {name}" for name, n in v.items() if n) or "—"


def verify_table() -> str | None:
    d = _load("verify_demo.json")
    if d is None:
        return None
    st = d.get("settings", {})
    conf = int(st.get("confidence", 0.95) * 100)
    rows = [[f"`{s['method']}`", s["k"], s.get("queries"), _signed(s["effect"]["mean"]),
             _ci(s["effect"]["low"], s["effect"]["high"]), s["effect"].get("n"), f"{s['p_value']:.2g}",
             _verdicts(s["verdicts"])] for s in d["summary"]]
    bands = [f"k = {c['k']}: {_signed(c['control_rise']['mean'])} {_ci(c['control_rise']['low'], c['control_rise']['high'])}"
             for c in d.get("control_band", [])]
    design, timing = d.get("design", {}), d.get("timing", {})
    lines = [
        f"Strategy `{d.get('strategy', 'remove')}`: retrain without each method's top-k rows vs without k random "
        f"rows ({st.get('controls', '?')} draws per seed) vs nothing removed, {len(st.get('seeds', []))} training "
        f"seeds, same initial weights and recipe. Effect = extra rise of the query's completion loss (nats/token) "
        f"over the random-k control, mean over queries per seed, then mean over seeds with a {conf}% t-interval; "
        f"p from a one-sample t-test (H0: the method's rows matter no more than random rows). Verdicts count "
        f"queries.",
        "",
        *_table(["method", "k", "queries", "effect", f"{conf}% CI", "seeds", "p", "verdicts (per query)"], rows),
    ]
    if bands:
        lines += ["", "Control band (loss rise from removing k random rows, vs nothing removed): " + "; ".join(bands) + "."]
    sweep = (f"{design.get('trained', '?')} trainings run, {design.get('reused', 0)} reused from the cache, "
             f"{_secs(timing.get('train_s_per_model'))} per model")
    lines += _retrain_footer(d, sweep, "python benchmarks/verify_demo.py", "verify_demo.png", "removal effect vs k")
    return "\n".join(lines)


def verify_example() -> str | None:
    """What `datablame verify` prints for the summary rows, rebuilt from verify_demo.json."""
    d = _load("verify_demo.json")
    if d is None:
        return None
    st = d.get("settings", {})
    conf = int(st.get("confidence", 0.95) * 100)
    out = [f"$ {d.get('benchmark', {}).get('command', 'datablame verify --config run.yaml')}",
           f"verify ({d.get('strategy', 'remove')}): top-k vs {st.get('controls', '?')} random-k draws, "
           f"{len(st.get('seeds', []))} seeds; effect = extra loss rise (nats/token)",
           f"{'method':<13}{'k':>3}  {'query':<8}{'effect':>8}  {conf}% CI{'':<12}{'p':>8}  verdict"]
    for s in d["summary"][:4]:
        e = s["effect"]
        out.append(f"{s['method']:<13}{s['k']:>3}  {'all ' + str(s.get('queries')):<8}{e['mean']:>+8.3f}  "
                   f"{_ci(e['low'], e['high']):<18}{s['p_value']:>8.2g}  {_verdicts(s['verdicts'])}")
    des = d.get("design", {})
    out.append(f"trainings: {des.get('trained')} new, {des.get('reused')} reused; "
               f"wall {d.get('timing', {}).get('wall_s', 0):.0f} s")
    return ("```\n" + "\n".join(out) + "\n```\n\n(summary rows only; the command also prints one row per query, "
            "from `benchmarks/results/verify_demo.json`)")


def loo_table() -> str | None:
    d = _load("loo_planted.json")
    if d is None:
        return None
    recall = d.get("attribution_recall@10") or {}
    comp = d["comparisons"]
    order = sorted(comp, key=lambda m: -(comp[m]["spearman"]["mean"]
                                         if comp[m]["spearman"]["mean"] == comp[m]["spearman"]["mean"] else -9))
    rows = []
    for m in order:
        c = comp[m]
        s = c["spearman"]
        ov = next((v for key, v in c.items() if key.startswith("top") and key.endswith("_overlap")), None)
        rows.append([f"`{m}`", _signed(s["mean"]), _ci(s["low"], s["high"]), _signed(c["pearson"]["mean"]), _f(ov, 2),
                     _f((recall.get(m) or {}).get("recall@10"))])
    conf = 95
    lines = [
        f"Planted corpus of {d['rows']} rows, {len(d['queries'])} queries, {len(d.get('seeds', []))} training "
        f"seed(s): one retraining without each row. LOO effect of a row = the query's completion-loss rise "
        f"(nats/token) when it is left out. Per query, Spearman / Pearson between a method's scores and the LOO "
        f"effects over all rows; mean over queries with a {conf}% bootstrap CI. Top-10 overlap: the share of the "
        f"method's top-10 rows among the 10 rows whose removal hurt most.",
        "",
        *_table(["method", "Spearman vs LOO", f"{conf}% CI", "Pearson", "top-10 overlap", "recall@10 (planted)"],
                rows),
    ]
    rel = d.get("split_half_reliability")
    if rel:
        lines += ["", f"LOO vs itself (split-half over seeds, the ceiling any method can reach): "
                      f"{_signed(rel['mean'])} {_ci(rel['low'], rel['high'])}."]
    gt = d.get("ground_truth")
    if gt:
        top1 = sum(v["top1_is_planted"] for v in gt.values())
        lines += ["", f"Ground truth check of LOO itself: the row whose removal hurts most is a planting row for "
                      f"{top1}/{len(gt)} queries."]
    if d.get("method_errors"):
        lines += ["", "Failed: " + "; ".join(f"`{m}` ({e[:80]})" for m, e in d["method_errors"].items())]
    des = d.get("design", {})
    sweep = f"{des.get('trainings', '?')} trainings ({des.get('trained', '?')} run, {des.get('reused', 0)} reused from the cache)"
    lines += _retrain_footer(d, sweep, "python benchmarks/loo_planted.py", "loo_planted.png",
                             "method scores vs leave-one-out effects")
    return "\n".join(lines)


# Markdown sections written by other commands: benchmarks/_readme_md.py


TABLES: dict[str, Callable[[], str | None]] = {
    "featurize": featurize_table,
    "query": query_table,
    "cascade": cascade_table,
    "methods": methods_table,
    "demo": demo_table,
    "ekfac_vs_kronfluence": ekfac_table,
    "architectures": architectures_table,
    "trak_vs_traker": trak_table,
    "convex_loo": convex_loo_table,
    "lds": lds_table,
    "lds_example": lds_example,
    "verify": verify_table,
    "verify_example": verify_example,
    "loo": loo_table,
    "methods_demo": md_file_section("methods_demo", "Methods side by side on the demo"),
    "bench_hops": md_file_section("bench_hops", "Ground-truth benchmark: hops"),
    "bench_planted": md_file_section("bench_planted", "Ground-truth benchmark: planted"),
    "bench_planted_normalized": md_file_section("bench_planted_normalized",
                                                "Ground-truth benchmark: planted, influence with normalize: true",
                                                retitle=True),
    "truth": truth_table,
}


def extra_tables() -> dict[str, Callable[[], str | None]]:
    """Sections written by other scripts as `benchmarks/results/<name>.readme.md` (marker `bench:<name>`)."""
    return {p.name.removesuffix(".readme.md"): md_file_section(p.name.removesuffix(".readme.md"))
            for p in sorted(RESULTS.glob("*.readme.md"))}


def render(text: str) -> tuple[str, list[str]]:
    """The README with every marker whose source exists regenerated; the names updated."""
    updated = []
    for name, make in {**extra_tables(), **TABLES}.items():
        pat = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /bench:{re.escape(name)} -->)", re.S)
        if not pat.search(text):
            continue
        body = make()
        if body is not None:
            text = pat.sub(lambda m, body=body: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
            updated.append(name)
    return text, updated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when README.md differs from the regenerated one")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    text = args.readme.read_text()
    new, updated = render(text)
    markers = set(re.findall(r"<!-- bench:([\w.-]+) -->", text))
    missing = sorted(markers - set(updated))
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date: run .venv/bin/python benchmarks/readme_tables.py")
            raise SystemExit(1)
        print(f"{args.readme} is up to date")
        return
    args.readme.write_text(new)
    print(f"updated {len(updated)} sections: {', '.join(updated)}")
    if missing:
        print(f"kept old text (no results file yet): {', '.join(missing)}")


if __name__ == "__main__":
    main()
