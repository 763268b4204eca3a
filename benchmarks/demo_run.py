"""Time the whole `datablame demo` command and keep its result as the README's demo figures.

    .venv/bin/python benchmarks/demo_run.py            # runs/demo-bench, then benchmarks/results/demo.json

Runs the real command in a child process (training from scratch included), measures its wall
time and the child's peak RSS, and writes the run's attribution/results.json (ranked rows,
recall@10 and mAP against the planted ground truth) with a `benchmark` block
{command, wall_s, peak_rss_gb, cpu_count, device, loadavg} to benchmarks/results/demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from datablame.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _device() -> str:
    """What `datablame demo` (model.device auto) ran on: the GPU's name, or cpu."""
    import torch

    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo-bench", help="run directory (replaced if it holds a demo run)")
    args = ap.parse_args()

    exe = Path(sys.executable).with_name("datablame")
    cmd = [str(exe), "demo", "--output-dir", args.run, "--overwrite"]
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=REPO)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"datablame demo failed with exit code {rc}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    data = json.loads(RunLayout(REPO / args.run).results_json.read_text())
    data["benchmark"] = {
        "command": f"datablame demo --output-dir {args.run} --overwrite",
        "wall_s": wall,
        "peak_rss_gb": peak_kb / 2**20,
        "cpu_count": os.cpu_count(),
        "device": _device(),
        "loadavg_start": list(load_start),
        "loadavg_end": list(os.getloadavg()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "demo.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(RESULTS / "demo.json")
    print(f"wrote {RESULTS / 'demo.json'}: {data['evaluation']['summary']}; wall {wall:.0f} s, "
          f"peak RSS {peak_kb / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
