"""LDS table of several methods on the demo corpus with the demo's tiny model, by one command.

    .venv/bin/python benchmarks/lds_demo.py                       # fresh sweep: M=20, alpha=0.5
    .venv/bin/python benchmarks/lds_demo.py --reuse --methods ...   # add methods, reuse the subsets

Trains and attributes the demo config once (runs/verify-demo), then times the one command
`datablame lds --config runs/verify-demo.yaml --methods ... --num-cpus 2` in its own process
and copies its lds.json / lds.png to benchmarks/results/lds_demo.{json,png}, adding the
command, its wall time (the first, fresh sweep is kept when --reuse only adds methods) and
the load average (the 2 cores are shared with other jobs, so walls are inflated).
"""

from __future__ import annotations

import argparse
import json
import shutil

from _verify_demo_run import RESULTS, demo_run, loadavg, run_cli

from datablame.layout import RunLayout

DEFAULT_METHODS = "grad_cosine,grad_dot,tracin,trak,datainf,less,datamodels"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/verify-demo")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--subsets", type=int, default=20)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep the cached subset models (adding methods)")
    args = ap.parse_args()

    methods = args.methods.split(",")
    _, yaml_path, timing = demo_run(args.run, ["grad_cosine", "grad_dot"])
    layout = RunLayout(args.run)
    if not args.reuse and layout.lds_dir.exists():
        shutil.rmtree(layout.lds_dir)  # a fresh sweep: the wall time below includes every training
    load_start = loadavg()
    cmd = ["lds", "--config", str(yaml_path), "--methods", ",".join(methods), "--subsets", str(args.subsets),
           "--num-cpus", str(args.num_cpus)]
    wall, rc = run_cli(cmd)
    if rc != 0:
        raise SystemExit(f"datablame lds failed with exit code {rc}")
    data = json.loads(layout.lds_json.read_text())
    out = RESULTS / "lds_demo.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    fresh = data["design"]["reused"] == 0
    bench = {
        "command": "datablame " + " ".join(cmd),
        "command_wall_s": wall,
        "fresh_sweep": fresh,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "demo_setup": timing,
        "within_30_min": wall <= 1800,
    }
    if not fresh and previous.get("benchmark", {}).get("fresh_sweep"):
        bench["first_fresh_sweep"] = previous["benchmark"] if "first_fresh_sweep" not in previous["benchmark"] \
            else previous["benchmark"]["first_fresh_sweep"]
    data["benchmark"] = bench
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    shutil.copy(layout.lds_plot, RESULTS / "lds_demo.png")
    print(f"wrote {out} and lds_demo.png; command wall {wall:.0f} s (fresh sweep: {fresh})")
    for r in data["table"]:
        if "lds" in r:
            print(f"  {r['method']:<12} LDS {r['lds']:+.3f}  [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]  ({r['queries']} queries)")
        else:
            print(f"  {r['method']:<12} error: {r['error'][:100]}")


if __name__ == "__main__":
    main()
