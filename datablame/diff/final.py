"""The diff's closing figures: `final_results.png` (4 panels), `final_results.json` and a
traced example `case_study.md`, from what the stages wrote (scan; blame and patch when run).

Panels: (a) behaviour rate vs alpha (pooled, Wilson 95 %; thin lines per prompt), (b) method
agreement (mean top-k Jaccard of the methods' per-query rankings of the pool), (c) patching
against controls (`patching.draw_patching`), (d) the summary in words.

The case study follows one surfaced output: the sample (lowest alpha first, as blamed), the
rows each method blames most for it (with their text), whether the patch removed them, and the
behaviour's rate on that prompt before patching (the scan, unpatched after-model) and after
(each arm, pooled over seeds).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datablame.diff.patching import BETTER, draw_patching
from datablame.layout import DiffLayout
from datablame.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text


def _fmt(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.3f}"


def summary_lines(scan: Mapping[str, Any], blame: Mapping[str, Any] | None,
                  patch: Mapping[str, Any] | None) -> list[str]:
    """The findings in a few sentences (panel d, and final_results.json)."""
    pooled = [p for p in scan.get("pooled", []) if p.get("rate") is not None]
    out = []
    if pooled:
        lo, hi = pooled[0], pooled[-1]
        out.append(f"rate {_fmt(lo['rate'])} ({lo['hits']}/{lo['n']}) at alpha {lo['alpha']:g} -> "
                   f"{_fmt(hi['rate'])} ({hi['hits']}/{hi['n']}) at alpha {hi['alpha']:g}")
    if blame:
        out.append(f"{len(blame.get('queries', []))} surfaced samples blamed over a pool of "
                   f"{blame.get('pool', {}).get('size')} rows")
        for m, rows in blame.get("blame", {}).items():
            out.append(f"{m}: top {', '.join(r['row_id'] for r in rows[:3])}")
    if patch:
        cmp = patch["comparison"]
        arms = {a["arm"]: a for a in cmp["arms"]}
        out.append(f"patch: -{patch['top_k']} rows, {patch['steps']} LoRA steps (r {patch['r']}), "
                   f"{patch['seeds']} seeds, alpha {patch['alpha']:g}")
        before = cmp.get("before") or {}
        out.append(f"unpatched {_fmt(before.get('rate'))}; baseline {_fmt(arms['baseline']['rate'])}; "
                   f"random {_fmt(arms['random']['rate'])}")
        for m, v in cmp["verdicts"].items():
            out.append(f"{m}: {_fmt(v['rate'])} -> {v['verdict']}")
    return out


def _draw_rates(ax: Any, scan: Mapping[str, Any]) -> None:
    cells = scan.get("cells", [])
    for pid in list(dict.fromkeys(c["prompt_id"] for c in cells))[:8]:
        mine = sorted((c for c in cells if c["prompt_id"] == pid and c["rate"] is not None), key=lambda c: c["alpha"])
        ax.plot([c["alpha"] for c in mine], [c["rate"] for c in mine], lw=0.8, alpha=0.5, marker="o", ms=2)
    pooled = [p for p in scan.get("pooled", []) if p["rate"] is not None]
    if pooled:
        ys = np.array([p["rate"] for p in pooled])
        err = [ys - [p["ci_low"] for p in pooled], np.array([p["ci_high"] for p in pooled]) - ys]
        ax.errorbar([p["alpha"] for p in pooled], ys, yerr=err, color="k", lw=2, marker="s", capsize=3,
                    label="all prompts")
        ax.legend(fontsize=7)
    ax.set_xlabel("alpha")
    ax.set_ylabel("behaviour rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("(a) rate vs amplification", fontsize=9)


def _draw_agreement(ax: Any, blame: Mapping[str, Any] | None) -> None:
    agreement = (blame or {}).get("agreement") or {}
    names = agreement.get("methods") or []
    mat = (agreement.get("matrices") or {}).get("jaccard")
    ax.set_title(f"(b) method agreement (top-{agreement.get('k', '?')} Jaccard, mean over queries)", fontsize=9)
    if not mat or len(names) < 2:
        ax.text(0.5, 0.5, "fewer than two methods:\nno agreement to show", ha="center", va="center")
        ax.axis("off")
        return
    m = np.array([[np.nan if x is None else x for x in row] for row in mat], dtype=float)
    ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="w" if m[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20)
    ax.set_yticks(range(len(names)), names, fontsize=7)


def plot_final(scan: Mapping[str, Any], blame: Mapping[str, Any] | None, patch: Mapping[str, Any] | None,
               path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    _draw_rates(axes[0, 0], scan)
    _draw_agreement(axes[0, 1], blame)
    ax = axes[1, 0]
    if patch:
        draw_patching(ax, patch["comparison"])
        ax.set_title(f"(c) patching against controls (alpha {patch['alpha']:g}, -{patch['top_k']} rows, "
                     f"{patch['seeds']} seeds)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no patch stage yet:\ndatablame diff --stage patch", ha="center", va="center")
        ax.axis("off")
        ax.set_title("(c) patching against controls", fontsize=9)
    ax = axes[1, 1]
    ax.axis("off")
    ax.set_title("(d) summary", fontsize=9)
    ax.text(0.0, 1.0, "\n".join(summary_lines(scan, blame, patch)), va="top", ha="left", fontsize=8, wrap=True,
            family="monospace", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _short(text: str, n: int = 160) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= n else t[: n - 1] + "…"


def case_study(scan: Mapping[str, Any], blame: Mapping[str, Any], patch: Mapping[str, Any] | None, *,
               per_row: int = 5) -> str:
    """Markdown tracing the first surfaced sample to its blamed rows and the patched rates."""
    q = blame["queries"][0]
    lines = ["# Case study: one surfaced output, traced", "",
             f"**Prompt** (`{q.get('prompt_id')}`, alpha {q.get('alpha')}, sample {q.get('sample')}):", "",
             "```", str(q["prompt"]).strip(), "```", "", "**Surfaced output** (labelled as the behaviour: "
             f"{_short(q.get('reason', ''), 200)}):", "", "```", str(q["completion"]).strip(), "```", ""]
    texts = (patch or {}).get("row_texts", {})
    removed = {m: set(r["row_id"] for r in rows) for m, rows in (patch or {}).get("removals", {}).items()}
    lines += ["## Rows blamed for this output", "",
              f"Each method's top {per_row} rows for this sample (its own ranking of the pool); "
              "`removed` = among the rows its patch dropped.", ""]
    for m, per_query in blame.get("top_k_per_query", {}).items():
        lines += [f"### {m}", "", "| rank | row | removed | prompt | completion |", "|---:|---|---|---|---|"]
        for rank, rid in enumerate(per_query[0][:per_row], 1):
            prompt, completion = texts.get(rid, ("", ""))
            lines.append(f"| {rank} | `{rid}` | {'yes' if rid in removed.get(m, set()) else 'no'} | "
                         f"{_short(prompt, 80).replace('|', '/')} | {_short(completion, 80).replace('|', '/')} |")
        lines.append("")
    if not patch:
        lines += ["(no patch stage yet: `datablame diff --stage patch` measures the rates after removal)", ""]
        return "\n".join(lines)
    pid, alpha = q.get("prompt_id"), patch["alpha"]
    before = next((c for c in scan.get("cells", []) if c["prompt_id"] == pid and c["alpha"] == alpha), None)
    cmp = patch["comparison"]
    lines += [f"## Rate before and after patching (alpha {alpha:g})", "",
              "Before: the unpatched after-model, this prompt: "
              + (f"{before['hits']}/{before['n']} = {before['rate']:.3f}" if before else "not scanned at this alpha")
              + f"; all prompts: {_fmt((cmp.get('before') or {}).get('rate'))}.", "",
              "| arm | rows removed | this prompt (pooled over seeds) | all prompts | per-seed rates | verdict |",
              "|---|---:|---|---|---|---|"]
    per_prompt = patch.get("per_prompt", {})
    for a in cmp["arms"]:
        h, n = per_prompt.get(a["arm"], {}).get(pid, (0, 0))
        v = cmp["verdicts"].get(a["arm"])
        lines.append(f"| {a['arm']} | {a['n_removed']} | {h}/{n} = {_fmt(h / n if n else None)} | "
                     f"{a['hits']}/{a['n']} = {_fmt(a['rate'])} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | "
                     + ", ".join(_fmt(s["rate"]) for s in a["seeds"]) + f" | {v['verdict'] if v else 'control'} |")
    best = [m for m, v in cmp["verdicts"].items() if v["verdict"] == BETTER]
    lines += ["", f"Verdict rule: {cmp['ci_method']}; a method is '{BETTER}' only when its rate is lower than both "
                  "controls' and both intervals exclude 0.", "",
              ("Methods better than both controls: " + ", ".join(best)) if best
              else "No method is better than both controls.", ""]
    return "\n".join(lines)


def write_final(layout: DiffLayout, scan: Mapping[str, Any], blame: Mapping[str, Any] | None,
                patch: Mapping[str, Any] | None) -> dict[str, str]:
    """final_results.json / .png and (when blame exists) case_study.md under `layout`."""
    files = {"final_png": str(plot_final(scan, blame, patch, layout.final_png))}
    if blame and blame.get("queries"):
        files["case_study"] = str(atomic_write_text(layout.case_study_md, case_study(scan, blame, patch)))
    doc = {
        "summary": summary_lines(scan, blame, patch),
        "scan": {"amplification": scan.get("amplification"), "key": scan.get("key"), "pooled": scan.get("pooled"),
                 "prompts": scan.get("prompts")},
        "blame": None if not blame else {
            "queries": len(blame.get("queries", [])), "pool": blame.get("pool", {}).get("size"),
            "methods": blame.get("methods"), "blame_unit": blame.get("blame_unit"), "top": blame.get("blame"),
            "agreement": blame.get("agreement")},
        "patch": None if not patch else {k: patch[k] for k in patch if k not in ("row_texts", "records")},
        "files": {**files, "final_json": str(layout.final_json)},
    }
    atomic_write_json(layout.final_json, doc)
    return doc["files"]
