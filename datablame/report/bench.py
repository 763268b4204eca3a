"""Views of a bench.json (the source of truth): Markdown tables, the README section, plots.

Everything here reads only the JSON written by `bench.runner`, so a table or plot can be
regenerated from a stored result without rerunning anything:

    python -c "import json,sys; from datablame.report.bench import render_readme_section as r; \
print(r(json.load(open(sys.argv[1]))))" benchmarks/results/bench_hops.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = [("ap", "mAP"), ("mrr", "MRR"), ("recall@1", "R@1"), ("recall@5", "R@5"), ("recall@10", "R@10"),
           ("precision@10", "P@10"), ("roc_auc", "ROC-AUC")]


def _f(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _mib(b: Any) -> str:
    return "—" if b is None else f"{b / 2**20:,.0f}"


def _secs(s: Any) -> str:
    if s is None:
        return "—"
    return f"{s:.1f}" if s < 100 else f"{s:,.0f}"


def _ranked(bench: dict[str, Any], subset: str = "learned") -> list[tuple[str, dict[str, Any]]]:
    def key(item):
        m = item[1].get("metrics", {}).get(subset, {}).get("ap", {}).get("mean")
        return -1.0 if m is None else m

    return sorted(bench["methods"].items(), key=key, reverse=True)


def metrics_table(bench: dict[str, Any], subset: str = "learned", with_cost: bool = True) -> str:
    head = ["method", "kind", *[label + (" (95% CI)" if key == "ap" else "") for key, label in COLUMNS]]
    if with_cost:
        head += ["time (s)", "peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in _ranked(bench, subset):
        if e.get("error"):
            cells = [name, e["kind"], f"error: {e['error'][:90]}"] + [""] * (len(head) - 3)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        m = e.get("metrics", {}).get(subset, {})
        if not m:
            continue
        cells = [name, e["kind"]]
        for key, _ in COLUMNS:
            v = m.get(key, {})
            cell = _f(v.get("mean"))
            if key == "ap" and v.get("ci_low") is not None:
                cell += f" ({_f(v['ci_low'], 2)}–{_f(v['ci_high'], 2)})"
            cells.append(cell)
        if with_cost:
            cells += [_secs(e.get("seconds")), _mib(e.get("peak_bytes"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(bench: dict[str, Any], metric: str = "ap") -> str:
    groups = [g for g in bench["queries"]["groups"]
              if any(g in e.get("by_group", {}) for e in bench["methods"].values())]
    counts = {g: next((e["by_group"][g][metric]["n"] for e in bench["methods"].values()
                       if g in e.get("by_group", {})), 0) for g in groups}
    head = ["method", *[f"{g} (n={counts[g]})" for g in groups]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in _ranked(bench):
        if e.get("error") or not e.get("by_group"):
            continue
        lines.append("| " + " | ".join([name, *[_f(e["by_group"].get(g, {}).get(metric, {}).get("mean"))
                                                 for g in groups]]) + " |")
    return "\n".join(lines)


def variant_table(bench: dict[str, Any]) -> str:
    """mAP and ROC-AUC of each method on the harder views of the ground truth."""
    names = list(bench.get("variants", {}))
    if not names:
        return ""
    head = ["method", *[f"{v} {m} (n={bench['variants'][v]['queries']})" for v in names for m in ("mAP", "ROC-AUC")]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in _ranked(bench):
        if e.get("error") or not e.get("variants"):
            continue
        cells = [name]
        for v in names:
            m = e["variants"].get(v, {})
            cells += [_f(m.get("ap", {}).get("mean")), _f(m.get("roc_auc", {}).get("mean"))]
        lines.append("| " + " | ".join(cells) + " |")
    notes = "; ".join(f"*{v}*: {d['description']}" for v, d in bench["variants"].items())
    return "\n".join(lines) + "\n\n" + notes


def logit_table(bench: dict[str, Any]) -> str:
    le = bench["logit_eval"]
    lines = ["| queries | learned | accuracy | chance |", "|---|---|---|---|"]
    for g, v in le["by_group"].items():
        n_ok = round(v["accuracy"] * v["n"])
        lines.append(f"| {g} | {n_ok}/{v['n']} | {_f(v['accuracy'])} | {_f(le['chance'].get(g))} |")
    n_ok = sum(r["learned"] for r in le["per_query"])
    lines.append(f"| **all** | {n_ok}/{le['n']} | {_f(le['accuracy'])} | |")
    return "\n".join(lines)


def agreement_table(bench: dict[str, Any]) -> str:
    if not bench.get("agreement"):
        return ""
    lines = ["| peer | our method | Spearman (mean over queries) | min | top-10 Jaccard (mean) |",
             "|---|---|---|---|---|"]
    for a in bench["agreement"]:
        lines.append(f"| {a['peer']} | {a['ours']} | {_f(a['spearman_mean'])} | {_f(a['spearman_min'])} | "
                     f"{_f(a.get('top10_jaccard_mean'))} |")
    lines += ["", "Each side runs with its own defaults here (its own random projection, kronfluence's "
                  "full-size factors against our 32x32 projected EKFAC, traker's dense projection against "
                  "our factored one), so Spearman over every row mostly compares projection noise on the "
                  "many rows that barely matter; the top-10 Jaccard compares the rows that do. With the "
                  "same settings the implementations agree: benchmarks/ekfac_vs_kronfluence.py and "
                  "benchmarks/trak_vs_traker.py."]
    return "\n".join(lines)


def verdict(bench: dict[str, Any]) -> str:
    b = bench.get("best", {})
    if "ours" not in b or "peer" not in b:
        return "No peer produced scores, so there is no head-to-head comparison in this run."
    o, p = b["ours"], b["peer"]
    overlap = o["ci_low"] is not None and p["ci_high"] is not None and o["ci_low"] <= p["ci_high"] \
        and p["ci_low"] <= o["ci_high"]
    rel = "≥" if b.get("ours_at_least_peer") else "<"
    tail = " (the 95% CIs overlap)" if overlap else " (the 95% CIs do not overlap)"
    return (f"Best of ours: **{o['name']}** mAP {_f(o['mean'])}; best peer: **{p['name']}** mAP "
            f"{_f(p['mean'])} — ours {rel} peer{tail}.")


def _header(bench: dict[str, Any]) -> list[str]:
    c, m, le = bench["corpus"], bench["model"], bench["logit_eval"]
    mach = bench["machine"]
    n_learned = len(bench["queries"]["learned"])
    return [
        f"Corpus: {c['name']}, {c['rows']:,} rows, {c['queries']} queries "
        f"({c['true_rows_per_query']['min']}–{c['true_rows_per_query']['max']} true rows each). "
        f"Model: tiny Llama, {m['params']:,} parameters, trained from scratch "
        f"({_secs(m.get('train_seconds'))} s{', reused' if m.get('train_reused') else ''}).",
        f"Logit evaluation: the model answers **{n_learned}/{le['n']}** queries right "
        f"(accuracy {_f(le['accuracy'])}); metrics below are over those queries.",
        f"Machine: {mach.get('cpu')}, {mach.get('cpu_count')} cores, torch threads {bench.get('threads') or mach.get('torch_threads')}; "
        f"whole command wall time **{_secs(bench.get('wall_seconds'))} s**.",
    ]


def render_readme_section(bench: dict[str, Any], image_prefix: str = "") -> str:
    """The README section: headline table, logit evaluation, verdict, plots."""
    name = bench["benchmark"]
    lines = [f"### Ground-truth benchmark: {name}", "", f"`{bench['command']}`", "", *_header(bench), "",
             metrics_table(bench), "", verdict(bench), "", "Logit evaluation (is the behaviour there?):", "",
             logit_table(bench), ""]
    if len(bench["queries"]["groups"]) > 1:
        lines += ["mAP by query group (learned queries):", "", group_table(bench), ""]
    variants = variant_table(bench)
    if variants:
        lines += ["Harder views of the ground truth (learned queries):", "", variants, ""]
    agree = agreement_table(bench)
    if agree:
        lines += ["Agreement with peers (same model, rows and queries):", "", agree, ""]
    if bench.get("skipped_methods"):
        lines += ["Not run (name them with --methods to include): "
                  + "; ".join(f"{k} ({v})" for k, v in bench["skipped_methods"].items()), ""]
    lines += [f"![precision-recall]({image_prefix}pr.png) ![recall@k]({image_prefix}recall_at_k.png)", ""]
    return "\n".join(lines)


def render_markdown(bench: dict[str, Any]) -> str:
    """The full report: README section plus the not-learned table and per-method settings."""
    lines = [render_readme_section(bench), "#### Queries the model gets wrong (reported separately)", ""]
    wrong = bench["queries"]["not_learned"]
    if wrong:
        lines += [f"{len(wrong)} queries: {', '.join(wrong)}", "", metrics_table(bench, "not_learned", with_cost=False)]
    else:
        lines += ["None."]
    lines += ["", "#### All queries", "", metrics_table(bench, "all", with_cost=False), "", "#### Methods", "",
              "| method | unit / entry point | sign |", "|---|---|---|"]
    for name, e in bench["methods"].items():
        d = e.get("describe") or {}
        what = d.get("unit") or d.get("entry_point") or ""
        lines.append(f"| {name} | {what} | {d.get('sign', '')} |")
    return "\n".join(lines) + "\n"


def _plot_lines(bench: dict[str, Any], path: Path, x_key: str | None, y_key: str, xlabel: str, ylabel: str,
                title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    ranked = [(n, e) for n, e in _ranked(bench) if e.get("curves")]
    cmap = plt.get_cmap("tab20")
    for i, (name, e) in enumerate(ranked):
        y = e["curves"][y_key]
        x = e["curves"][x_key] if x_key else list(range(1, len(y) + 1))
        style = "--" if e["kind"] == "peer" else "-"
        ax.plot(x, y, style, color=cmap(i % 20), lw=2 if e["kind"] == "peer" else 1.4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, 1.02)
    if x_key is None:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pr(bench: dict[str, Any], path: Path) -> Path:
    return _plot_lines(bench, Path(path), "pr_recall", "pr_precision", "recall", "interpolated precision",
                       f"{bench['benchmark']}: precision-recall (mean over learned queries; peers dashed)")


def plot_recall_at_k(bench: dict[str, Any], path: Path) -> Path:
    return _plot_lines(bench, Path(path), None, "recall_at_k", "k (rows retrieved)", "recall@k",
                       f"{bench['benchmark']}: recall@k (mean over learned queries; peers dashed)")
