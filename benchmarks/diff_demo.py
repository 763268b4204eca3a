"""The offline diff demo, measured: does amplification surface the planted phrase, and do the
methods blame the planted rows?

    nice -n 10 .venv/bin/python benchmarks/diff_demo.py          # ~1-3 min on 2 shared cores

Runs `datablame.api_diff.diff_demo` (the same as `datablame diff --demo`) in runs/diff-demo:
a tiny before/after Llama pair (4 planted rows say "The purple walrus knows best." to volcano
questions), a scan at alphas 0 and 4 (2 prompts x 40 samples each), and grad_cosine, bm25 and
embedding_cosine over a BM25 pool (100 asked; the demo corpus has 58 rows, so all of them).
Writes benchmarks/results/diff_demo.json (rate per alpha with Wilson 95 % intervals, recall@20
of the planted rows per method, timings, load average) and diff_demo_rates.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from datablame.api_diff import DEMO_METHODS, diff_demo

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/diff-demo")
    ap.add_argument("--n-samples", type=int, default=40)
    ap.add_argument("--methods", default=",".join(DEMO_METHODS))
    ap.add_argument("--pool-size", type=int, default=100)
    args = ap.parse_args()

    load_start = os.getloadavg()
    doc = diff_demo(args.out, n_samples=args.n_samples, methods=args.methods.split(","), pool_size=args.pool_size)
    doc["loadavg"] = {"start": list(load_start), "end": list(os.getloadavg())}
    doc["command"] = "nice -n 10 .venv/bin/python benchmarks/diff_demo.py"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "diff_demo.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    shutil.copy(doc["files"]["plot"], RESULTS / "diff_demo_rates.png")
    print(f"wrote {out} and diff_demo_rates.png in {doc['timings']['total_s']:.0f} s")
    for p in doc["rates"]:
        print(f"  alpha {p['alpha']:g}: rate {p['rate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] ({p['hits']}/{p['n']})")
    for m, r in doc["recall"].items():
        k = doc['settings']['k']
        print(f"  {m:<18} recall@{k} {r[f'recall@{k}']:.2f}  "
              f"planted ranks {r['planted_ranks']}")


if __name__ == "__main__":
    main()
