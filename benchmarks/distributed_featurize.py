"""Distributed featurize throughput: 1 process vs 2 torchrun ranks vs 2 Ray tasks (issue 21).

One run trains the tests' small planted config scaled to a few thousand rows (a 2-layer tiny
Llama, `pipeline_config.small_config`; a few training steps: the weights' values do not change
the cost), then builds its store three ways, each a fresh process from the command line,
overwriting the store, FAISS and text indices off:

- 1 process:      `datablame index --overwrite`                  (torch's default threads)
- 1 process, 1 thread: the same with OMP_NUM_THREADS=1 (the per-core baseline)
- 2 torchrun:     `datablame index --workers 2 --overwrite`      (gloo, 1 thread per rank)
- 2 Ray tasks:    `datablame index --ray --workers 2 --num-cpus 2 --overwrite` (a local Ray
                  instance started by the command, 1 CPU per task)

Per run: end-to-end rows/s (rows / the command's wall time: start-up, model loads, Ray start,
the merge and the finishing `api.index` included) and featurize rows/s (rows / the featurizing
phase: the single process's `featurize_s`; for ranks and tasks the slowest one's featurizing
seconds). Modes are interleaved over `--repeats`; medians. Each store's shard hashes are
compared with the single-process store's. Also records the cores and the load average before
and after every run: the 2 cores cap any speedup at 2x, and they are shared, so every wall time
is an upper bound.

    .venv/bin/python benchmarks/distributed_featurize.py            # ~10 min on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
import _common as C  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from pipeline_config import small_config  # noqa: E402

MODES = {
    "single": [],
    "single_1thread": [],  # the same with OMP_NUM_THREADS=1: the per-core baseline
    "torchrun_2": ["--workers", "2"],
    "ray_2": ["--ray", "--workers", "2", "--num-cpus", "2"],
}
ENV = {"single_1thread": {"OMP_NUM_THREADS": "1"}}
RANK_LINE = re.compile(r"rank (\d+): featurized (\d+) rows in ([0-9.]+) s")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=400, help="planted entities (x background rows each)")
    ap.add_argument("--background", type=int, default=18, help="background rows per entity")
    ap.add_argument("--hidden", type=int, default=512, help="tiny Llama hidden size (intermediate = 2x)")
    ap.add_argument("--shard-rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "distributed_featurize.json")
    return ap.parse_args()


def build_config(a: argparse.Namespace, run_dir: Path):
    small = small_config(run_dir)
    planted = {**small.data.planted.model_dump(), "n_entities": a.entities, "background_per_entity": a.background}
    tiny = {**small.model.tiny.model_dump(), "hidden_size": a.hidden, "intermediate_size": 2 * a.hidden}
    return small_config(
        run_dir, data={"source": "planted", "planted": planted}, model={"kind": "tiny", "max_length": 96, "tiny": tiny},
        training={"max_steps": 4, "save_steps": 4, "per_device_train_batch_size": 16},
        attribution={"method": "grad_cosine", "top_k": 5, "batch_size": 16, "store": {"shard_rows": a.shard_rows}},
    )


def run_mode(mode: str, cfg_path: Path, store_dir: Path, summary_path: Path) -> dict:
    datablame = Path(sys.executable).parent / "datablame"
    cmd = [str(datablame), "index", "--config", str(cfg_path), "--faiss", "none", "--no-text-indices", "--overwrite",
           *MODES[mode]]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **ENV.get(mode, {})})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads(summary_path.read_text())
    rows = summary["rows"]
    if mode.startswith("single"):
        feat_s, per_worker = summary["featurize_s"], None
    elif mode.startswith("torchrun"):
        per_worker = [{"rank": int(r), "rows": int(n), "featurize_s": float(s)} for r, n, s in RANK_LINE.findall(done.stderr)]
        if len(per_worker) != 2 or sum(w["rows"] for w in per_worker) != rows:
            raise SystemExit(f"torchrun ranks did not report all rows:\n{done.stderr[-3000:]}")
        feat_s = max(w["featurize_s"] for w in per_worker)
    else:
        ran = summary["ray"]
        per_worker = [{k: t[k] for k in ("rank", "rows", "load_s", "featurize_s", "pid")} for t in ran["task_results"]]
        if ran["tasks"] != 2 or ran["rows"] != rows:
            raise SystemExit(f"ray ran {ran['tasks']} tasks over {ran['rows']} rows, not 2 over {rows}")
        feat_s = max(w["featurize_s"] for w in per_worker)
    from datablame.store.manifest import read_manifest

    manifest = read_manifest(store_dir)
    return {
        "mode": mode, "command": " ".join(cmd[1:]), "rows": rows, "wall_s": wall, "featurize_s": feat_s,
        "rows_per_s_end_to_end": rows / wall, "rows_per_s_featurize": rows / feat_s, "workers": per_worker,
        "shard_sha256": [e["sha256"] for e in manifest["shards"]],
        "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()),
    }


def main() -> None:
    a = parse_args()
    from datablame import api
    from datablame.layout import RunLayout

    info = {"machine": C.machine(torch.device("cpu")), "started": C.now(), "command": C.command_line()}
    with tempfile.TemporaryDirectory(prefix="dist_featurize_") as tmp:
        run_dir = Path(tmp) / "run"
        cfg = build_config(a, run_dir)
        cfg_path = Path(tmp) / "run.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        t0 = time.perf_counter()
        api.train(cfg)
        info["train_s"] = time.perf_counter() - t0
        layout = RunLayout(run_dir)
        runs = []
        for rep in range(a.repeats):
            order = list(MODES) if rep % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                r = run_mode(mode, cfg_path, layout.store_dir, layout.index_summary)
                r["repeat"] = rep
                runs.append(r)
                print(f"{mode:>11}: {r['rows']} rows, wall {r['wall_s']:.1f} s ({r['rows_per_s_end_to_end']:.1f} rows/s), "
                      f"featurize {r['featurize_s']:.1f} s ({r['rows_per_s_featurize']:.1f} rows/s), "
                      f"load {r['loadavg_before'][0]:.1f}", flush=True)
    med = {m: {k: statistics.median(r[k] for r in runs if r["mode"] == m)
               for k in ("wall_s", "featurize_s", "rows_per_s_end_to_end", "rows_per_s_featurize")} for m in MODES}
    single_hashes = next(r["shard_sha256"] for r in runs if r["mode"] == "single")
    loads = [x for r in runs for x in (r["loadavg_before"][0], r["loadavg_after"][0])]
    out = {
        **info,
        "finished": C.now(),
        "config": {"rows": runs[0]["rows"], "entities": a.entities, "background_per_entity": a.background,
                   "hidden": a.hidden, "layers": cfg.model.tiny.num_hidden_layers, "max_length": cfg.model.max_length,
                   "shard_rows": a.shard_rows, "batch_size": cfg.attribution.batch_size,
                   "projection": cfg.attribution.projection.model_dump(mode="json"), "repeats": a.repeats},
        "threads": {"single": torch.get_num_threads(), "single_1thread": 1, "torchrun_2": "1 per rank (OMP_NUM_THREADS)",
                    "ray_2": "1 per task (num_cpus=1, torch.set_num_threads)"},
        "cores": os.cpu_count(),
        "loadavg_1min_range": [min(loads), max(loads)],
        "median": med,
        "ratio_vs_single": {m: {k: med[m][k] / med["single"][k] for k in ("rows_per_s_end_to_end", "rows_per_s_featurize")}
                            for m in MODES if m != "single"},
        "ratio_vs_single_1thread": {m: {k: med[m][k] / med["single_1thread"][k]
                                        for k in ("rows_per_s_end_to_end", "rows_per_s_featurize")}
                                    for m in ("torchrun_2", "ray_2")},
        "stores_bit_identical_to_single": {m: all(r["shard_sha256"] == single_hashes for r in runs if r["mode"] == m)
                                           for m in MODES},
        "runs": runs,
        "note": (f"{os.cpu_count()} CPU cores cap any speedup at {os.cpu_count()}x, and the single process already "
                 "uses every core through torch's intra-op threads; the cores are shared with other jobs (load "
                 "average recorded per run), so every wall time is an upper bound and ratios move with the load. "
                 "End-to-end includes process start, model loads (one per rank/task), Ray start and the final "
                 "api.index pass; featurize is the featurizing phase alone (slowest rank/task)."),
    }
    C.write_json(a.out, out)
    print(json.dumps({"ratio_vs_single": out["ratio_vs_single"], "ratio_vs_single_1thread": out["ratio_vs_single_1thread"],
                      "bit_identical": out["stores_bit_identical_to_single"],
                      "load": out["loadavg_1min_range"]}, indent=1))


if __name__ == "__main__":
    main()
