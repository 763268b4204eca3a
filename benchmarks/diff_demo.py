"""The offline diff demo, measured: does amplification surface the planted phrase, do the
methods blame the planted rows, and does removing the blamed rows (LoRA patch) lower the rate
more than the two controls?

    nice -n 10 .venv/bin/python benchmarks/diff_demo.py          # ~2-4 min on 2 shared cores

Runs `datablame.api_diff.diff_demo` (the same as `datablame diff --demo`) in runs/diff-demo:
a tiny before/after Llama pair (4 planted rows say "The purple walrus knows best." to volcano
questions), a scan at alphas 0 and 4 (2 prompts x 40 samples each), grad_cosine, bm25 and
embedding_cosine over a BM25 pool (100 asked; the demo corpus has 58 rows, so all of them),
then the patch stage: per method its top 8 rows removed and the after-model LoRA-fine-tuned
(r 8, 100 steps, 3 seeds), against the same fine-tune on all rows (baseline) and on all rows
minus 8 random rows no method removes; each patched model scanned at alpha 4 (40 samples per
prompt per seed). Writes benchmarks/results/diff_demo.json (rate per alpha with Wilson 95 %
intervals, recall@20 of the planted rows per method, the patch comparison with verdicts,
timings, load average, cores), diff_demo_rates.png, diff_demo_patching.png/.csv,
diff_demo_final.png and diff_demo_case_study.md. Wall times are upper bounds: the 2 cores are
shared (load average recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from datablame.api_diff import DEMO_METHODS, diff_demo

RESULTS = Path(__file__).resolve().parent / "results"
COPIES = {"plot": "diff_demo_rates.png", "patching_png": "diff_demo_patching.png",
          "patching_csv": "diff_demo_patching.csv", "final_png": "diff_demo_final.png",
          "case_study": "diff_demo_case_study.md"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/diff-demo")
    ap.add_argument("--n-samples", type=int, default=40)
    ap.add_argument("--methods", default=",".join(DEMO_METHODS))
    ap.add_argument("--pool-size", type=int, default=100)
    ap.add_argument("--no-patch", action="store_true", help="skip the patch stage")
    args = ap.parse_args()

    load_start = os.getloadavg()
    doc = diff_demo(args.out, n_samples=args.n_samples, methods=args.methods.split(","), pool_size=args.pool_size,
                    patch=not args.no_patch)
    doc["loadavg"] = {"start": list(load_start), "end": list(os.getloadavg())}
    doc["cores"] = os.cpu_count()
    doc["wall_times"] = "upper bounds: the machine's cores are shared with other work (see loadavg)"
    doc["command"] = "nice -n 10 .venv/bin/python benchmarks/diff_demo.py"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "diff_demo.json"
    for key, name in COPIES.items():
        if key in doc["files"]:
            shutil.copy(doc["files"][key], RESULTS / name)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out} and {', '.join(n for k, n in COPIES.items() if k in doc['files'])} "
          f"in {doc['timings']['total_s']:.0f} s")
    for p in doc["rates"]:
        print(f"  alpha {p['alpha']:g}: rate {p['rate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}] ({p['hits']}/{p['n']})")
    for m, r in doc["recall"].items():
        k = doc['settings']['k']
        print(f"  {m:<18} recall@{k} {r[f'recall@{k}']:.2f}  "
              f"planted ranks {r['planted_ranks']}")
    if "patch" in doc:
        p = doc["patch"]
        print(f"  patch at alpha {p['alpha']:g} (unpatched {p['unpatched']['rate']:.3f}):")
        for a in p["arms"]:
            v = p["verdicts"].get(a["arm"], {}).get("verdict", "control")
            print(f"    {a['arm']:<18} {a['rate']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] ({a['hits']}/{a['n']}) "
                  f"seeds {[round(x, 3) for x in a['seed_rates']]}  {v}")


if __name__ == "__main__":
    main()
