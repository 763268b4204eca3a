"""Regenerate the README's benchmark tables from the JSON in benchmarks/results/.

Each table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in README.md; this
script replaces what is between the markers, so the README never states a figure that is not
in a results file. Run: .venv/bin/python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


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
        f"({d['date'][:10]})."
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
        f"{d['machine']['cpu_count']} CPU cores ({d['date'][:10]}).",
        "",
        "| rows | method | p50 ms | p95 ms | recall@10 vs exact |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_rows']:,} | {r['method']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall_at_10']:.3f} |"
        )
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str | None]] = {"featurize": featurize_table, "query": query_table}


def extra_tables() -> dict[str, Callable[[], str | None]]:
    """Tables written by other scripts as Markdown files `benchmarks/results/<name>.readme.md`."""
    out = {}
    for p in sorted(RESULTS.glob("*.readme.md")):
        out[p.name.removesuffix(".readme.md")] = lambda p=p: p.read_text().strip()
    return out


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name, make in {**TABLES, **extra_tables()}.items():
        pat = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /bench:{re.escape(name)} -->)", re.S)
        if not pat.search(text):
            continue
        body = make()
        if body is not None:
            text = pat.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
            print(f"updated table {name}")
    readme.write_text(text)


if __name__ == "__main__":
    main()
