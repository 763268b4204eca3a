"""README section `bench:architectures` from benchmarks/results/architectures.json
(written by benchmarks/architectures.py); used by readme_tables.py."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _e(x) -> str:
    return "—" if x is None else f"{x:.1e}"


def _s(x) -> str:
    return "—" if x is None else f"{x:.4f}"


def architectures_table() -> str | None:
    p = RESULTS / "architectures.json"
    if not p.is_file():
        return None
    d = json.loads(p.read_text())
    lines = [
        f"{d['what']}. Models: {d['models']}.",
        "",
        "| architecture | training | autograd max rel. error (modules, with bias) | EKFAC vs kronfluence Spearman, "
        "identity | same, 32x32 projection | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        lines.append(f"| {r['architecture']} | {r['training']} | {_e(r['autograd_max_rel_error'])} "
                     f"({r['autograd_modules']}, {r['autograd_biased_modules']}) | {_s(r['spearman_identity'])} | "
                     f"{_s(r['spearman_default_projection'])} | {r['seconds']:.1f} |")
    w = d.get("wikitext_gpt2")
    if w:
        lines += ["", f"kronfluence's GPT-2 WikiText setting ({w['setting']}) on a {w['model']}, {w['data']}: "
                      f"train loss {w['train_loss_first']:.2f} → {w['train_loss_last']:.2f} in {w['train_steps']} "
                      f"steps; our EKFAC vs kronfluence Spearman {_s(w['spearman_identity'])} (identity), "
                      f"{_s(w['spearman_default_projection'])} (32x32 projection)."]
    s = d["settings"]
    m = d.get("machine", {})
    lines += ["", f"Autograd: {s['autograd']}. Agreement: {s['agreement']}.", "",
              f"Reproduce: `{d.get('command', 'python benchmarks/architectures.py')}`; date {str(d.get('date'))[:10]}; "
              f"{m.get('platform', '?')}, torch {m.get('torch', '?')}, {m.get('threads', '?')} threads; "
              f"{d['seconds']:.0f} s in all."]
    return "\n".join(lines)
