"""README section `bench:truth` from benchmarks/results/truth.json (written by
benchmarks/truth.py): per planted variant and method, recall@10, mAP and LDS with CIs, and
whether issue 16's goals hold; used by readme_tables.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ORDER = ("easy", "paraphrase", "lexical_decoys", "unlearned")
FIRST = ("fused", "cascade + fused", "cascade (grad_cosine re-rank)", "bm25", "embedding_cosine")
LAST = ("random",)


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _m(r: dict, key: str, ci: bool = False) -> str:
    m = r.get(key) or {}
    if m.get("mean") is None:
        return "—"
    text = _f(m["mean"])
    if ci and m.get("ci_low") is not None and m.get("ci_high") is not None:
        text += f" [{_f(m['ci_low'], 2)}, {_f(m['ci_high'], 2)}]"
    return text


def _yes(flag: Any) -> str:
    return "—" if flag is None else ("**yes**" if flag else "no")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]]


def _order(names: set[str]) -> list[str]:
    head = [n for n in FIRST if n in names]
    tail = [n for n in LAST if n in names]
    return head + sorted(names - set(head) - set(tail)) + tail


def truth_table() -> str | None:
    p = RESULTS / "truth.json"
    if not p.is_file():
        return None
    d = json.loads(p.read_text())
    variants = [v for v in ORDER if v in d.get("variants", {})]
    if not variants:
        return None
    vs = d["variants"]
    sizes = {v: vs[v]["size"] for v in variants}
    s0 = sizes[variants[0]]
    n_rows = ", ".join(f"{v} {sizes[v]['rows']} rows" for v in variants)
    lines = [
        f"Planted corpus ({s0['name']} size: {n_rows}; "
        f"{s0['queries']} queries each; tiny Llama hidden {s0['model']['hidden_size']}, "
        f"{s0['model']['num_hidden_layers']} layers, {s0['epochs']} epochs), one model per variant. Every method of "
        "`datablame bench planted --methods all` plus the kronfluence peer, the retrieval cascade with the gradient "
        f"re-rank or `fused` as last stage (stages {d['settings']['cascade']}), and LDS against "
        f"M = {d['settings']['lds_subsets']} subset models (alpha {d['settings']['lds_alpha']}) scored on each "
        "method's bench scores. **All metrics on the queries the model answers right** (logit evaluation; learned "
        "per variant: " + ", ".join(f"{v} {sizes[v]['learned_queries']}/{sizes[v]['queries']}" for v in variants)
        + "); 95% bootstrap CIs over those queries.",
        "",
        "Goals of issue 16 per variant:",
        "",
    ]
    lines += _goals(vs, variants, "goals")
    if any("goals_all_queries" in vs[v] for v in variants):
        lines += ["", "The same goals over every query, learned or not (the paraphrase variant's model answers few "
                      "queries in the query's own words, so its learned-only row rests on few queries):", ""]
        lines += _goals(vs, [v for v in variants if "goals_all_queries" in vs[v]], "goals_all_queries")
    return _rest(d, vs, variants, sizes, lines)


def _goals(vs: dict, variants: list[str], key: str) -> list[str]:
    goal_rows = []
    for v in variants:
        g = vs[v][key]
        f, c, e = g.get("fused", {}), g.get("cascade + fused", {}), g.get("ekfac_vs_kronfluence", {})
        fr, fl = f.get("recall", {}), f.get("lds", {})
        goal_rows.append([
            v,
            f"{_f(fr.get('fusion'))} vs {_f(max(fr.get('bm25') or 0, fr.get('best_gradient_recall') or 0))} "
            f"(`{fr.get('best_gradient')}`)", _yes(fr.get("holds")),
            f"{_f(fl.get('fusion'))} vs {_f(fl.get('best_single_lds'))} (`{fl.get('best_single')}`)",
            _yes(fl.get("holds")),
            f"{_f(c.get('recall', {}).get('fusion'))} / {_f(c.get('lds', {}).get('fusion'))}",
            f"{_f(e.get('mean'))} [{_f(e.get('ci_low'))}, {_f(e.get('ci_high'))}]" if e else "—",
            _yes(e.get("holds") if e else None),
        ])
    return _table(["variant", "fused recall@10 vs max(bm25, best gradient)", "holds",
                   "fused LDS vs best single method", "within 0.02", "cascade + fused recall@10 / LDS",
                   "ekfac − kronfluence LDS (paired 95% CI)", "CI not below 0"], goal_rows)


def _rest(d: dict, vs: dict, variants: list[str], sizes: dict, lines: list[str]) -> str:
    names = _order(set().union(*(vs[v]["methods"] for v in variants)))
    head = ["method"] + [f"{v} {k}" for v in variants for k in ("recall@10", "LDS")]
    rows = []
    for n in names:
        row = [f"`{n}`"]
        for v in variants:
            r = vs[v]["methods"].get(n, {})
            row += ["error" if "error" in r else _m(r, "recall@10"), "error" if "error" in r else _m(r, "lds")]
        rows.append(row)
    lines += ["", "Recall@10 and LDS per method (means; CIs, mAP and seconds below):", "", *_table(head, rows)]
    for v in variants:
        rows = []
        for n in names:
            r = vs[v]["methods"].get(n)
            if r is None:
                continue
            if "error" in r:
                rows.append([f"`{n}`", "error: " + r["error"][:80], "", "", "", "", ""])
                continue
            a = r.get("all_queries") or {}
            rows.append([f"`{n}`", _m(r, "recall@10", True), _m(r, "map", True), _m(r, "lds", True),
                         _m(a, "recall@10"), _m(a, "lds"),
                         _f(r.get("seconds"), 1) + (" (reused)" if r.get("reused") else "")])
        q = vs[v]["queries"]
        note = ""
        if q.get("learned_by_design_false"):
            note = (f" Queries built not to be learned (`learned_by_design: false`): "
                    f"{', '.join(q['learned_by_design_false'])}; answered anyway: "
                    f"{', '.join(q.get('learned_by_design_false_but_answered') or []) or 'none'}. "
                    "Metrics are on learned queries only.")
        m = vs[v]["machine"]
        lines += ["", f"<details><summary>{v}: {sizes[v]['rows']} rows, {sizes[v]['learned_queries']} learned "
                      f"queries, mean with 95% CI</summary>", "", *_table(
                          ["method", "recall@10", "mAP", "LDS", "recall@10, all queries", "LDS, all queries",
                           "seconds"], rows),
                  "", f"{note} Wall {vs[v]['wall_s']:.0f} s for the variant; {m['cores']} CPU cores, load average "
                      f"{m['loadavg_start'][0]:.1f} at start → {m['loadavg_end'][0]:.1f} at end (shared: "
                      "seconds are upper bounds).".strip(), "", "</details>"]
    lines += ["", f"Reproduce: `.venv/bin/python benchmarks/truth.py` (resumable per variant; `--force` redoes); "
                  f"date {d['date'][:10]}; from `benchmarks/results/truth.json`."]
    return "\n".join(lines)
