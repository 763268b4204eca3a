"""Representation, cross-checkpoint and LLM-judge methods on the demo (seeds 002, 004).

    .venv/bin/python benchmarks/representation_methods_demo.py            # all variants
    .venv/bin/python benchmarks/representation_methods_demo.py --only delta_h,causal_patching

Uses the trained demo model (`datablame demo` config; copied from runs/demo when that run
exists and matches, trained into --run otherwise -- runs/demo itself is never written).
Each (method, options) variant gets fresh AttributionContext (no cache shared between
variants, so each time includes everything the method computes; the judge gets an empty
SQLite cache), and is scored for recall@10 and mAP on the 8 planted-fact queries. Wall and
process CPU seconds are recorded with the load average: the 2 cores are shared, so walls are
inflated; CPU seconds are the fairer cost. Writes
benchmarks/results/representation_methods_demo.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import md_table, now, write_json

from datablame import api
from datablame.demo import demo_config
from datablame.layout import RunLayout
from datablame.methods import run_method
from datablame.runs import run_key

RESULTS = Path(__file__).parent / "results"

VARIANTS: list[tuple[str, dict]] = [
    ("grad_cosine", {}),  # the reference gradient method
    ("activation_similarity", {}),
    ("activation_similarity", {"center": True}),
    ("activation_similarity", {"pooling": "last"}),
    ("activation_gradient", {}),
    ("activation_gradient", {"aggregate": "learned"}),
    ("delta_h", {}),
    ("delta_h", {"aggregate": "topk", "top_k": 2}),
    ("delta_h_grad", {}),
    ("delta_h_grad", {"ig_steps": 8}),
    ("causal_patching", {}),
    ("causal_patching", {"mode": "additive"}),
    ("causal_patching", {"direction": "new_to_old"}),
    ("causal_patching", {"direction": "new_to_old", "mode": "additive"}),
    ("llm_judge", {"candidates": 20}),
]


def prepare_run(run: Path) -> Path:
    """A run directory holding the trained demo model (copied from runs/demo or trained)."""
    cfg = demo_config(str(run))
    layout, src = RunLayout(run), RunLayout("runs/demo")
    if not layout.final_model.is_dir():
        if src.final_model.is_dir() and src.base_model.is_dir():
            run.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src.model_dir, layout.model_dir, dirs_exist_ok=True)
            # same data/model/training settings (only new config defaults may differ in the marker)
            layout.marker.write_text(json.dumps({"name": "demo", "run_key": run_key(cfg), "created": now()}))
        else:
            api.train(cfg)
    return run


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/repr-demo")
    ap.add_argument("--only", default=None, help="comma-separated method names")
    args = ap.parse_args()
    torch.set_num_threads(2)
    run = prepare_run(Path(args.run))
    cfg = demo_config(str(run))
    only = set(args.only.split(",")) if args.only else None
    rows, table = [], []
    judge_cache = Path(tempfile.mkdtemp(prefix="judge-cache-")) / "cache.sqlite"
    for name, options in VARIANTS:
        if only and name not in only:
            continue
        opts = dict(options)
        if name == "llm_judge":
            opts["cache"] = str(judge_cache)
        load0 = loadavg()
        inputs, truth = api.prepare_inputs(cfg)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        run = run_method(inputs, name, opts)
        m, scores = run.method, run.scores
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        ev = api.evaluate_against_truth(inputs.corpus, inputs.queries, {name: scores}, truth, 10)["per_method"][name]
        info = getattr(m, "info", {})
        rows.append({"method": name, "options": options, "recall@10": ev["recall@10"], "mAP": ev["mAP"],
                     "queries": ev["queries"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "loadavg_start": load0, "loadavg_end": loadavg(), "info": info})
        table.append([name, json.dumps(options) if options else "defaults", f"{ev['recall@10']:.3f}",
                      f"{ev['mAP']:.3f}", f"{wall:.1f}", f"{cpu:.1f}"])
        print(f"{name} {options}: recall@10={ev['recall@10']:.3f} mAP={ev['mAP']:.3f} wall={wall:.1f}s cpu={cpu:.1f}s",
              flush=True)
    out = RESULTS / "representation_methods_demo.json"
    previous = json.loads(out.read_text()) if out.is_file() and only else {}
    kept = [r for r in previous.get("variants", []) if r["method"] not in (only or set())]
    write_json(out, {
        "created": now(), "corpus": "planted (demo config): 544 rows, 8 planted-fact queries",
        "model": "demo tiny Llama: 4 layers, hidden 128, trained from scratch; old checkpoint = random init (model/base)",
        "torch_threads": 2, "variants": kept + rows,
    })
    print(md_table(["method", "options", "recall@10", "mAP", "wall s", "cpu s"], table))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
