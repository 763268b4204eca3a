"""`datablame plan` against measured runs (issue 21, item 5): three CPU configs of different sizes.

For each config: `datablame plan --json` (its own process, so its calibration sees the same
machine and start-up as the stages), then `datablame train`, `datablame index --no-text-indices`
and `datablame attribute`, each its own process: wall time and peak RSS (`os.wait4`'s
ru_maxrss) per stage against the plan's `train`, `featurize` and `scores` stages, with the
ratio predicted / measured and whether it is within +-30 %.

Configs: `tiny` (the demo's shape, 3 epochs), `wide` (hidden and intermediate sizes doubled),
`long` (a generated JSONL of 1,200 rows of ~200 tokens, max_length 256: 7x the rows' tokens),
`big` (hidden 768, intermediate 2048, 30 M parameters, 1 epoch: the model's own bytes matter).
Wall times on the 2 shared cores are upper bounds; the load average is recorded around every
run. Writes benchmarks/results/plan_check.json.

    nice -n 10 .venv/bin/python benchmarks/plan_check.py [--configs tiny wide long]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datablame.layout import RunLayout  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "plan_check.json"
CLI = [str(Path(sys.executable).parent / "datablame")]
STAGES = {"train": ["train"], "featurize": ["index", "--no-text-indices"], "scores": ["attribute"]}
TOLERANCE = 0.30

TINY = {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 1024}


def _config(name: str, work: Path) -> dict:
    cfg = {
        "name": name, "seed": 0,
        "data": {"source": "planted", "planted": {"seed": 0}},
        "model": {"kind": "tiny", "max_length": 128, "tiny": dict(TINY)},
        "training": {"num_train_epochs": 3, "per_device_train_batch_size": 16, "learning_rate": 2e-3,
                     "lr_scheduler_type": "cosine", "save_steps": 400, "logging_steps": 100, "seed": 0},
        "attribution": {"method": "grad_cosine", "modules": {"pattern": r"mlp\.(gate_proj|up_proj|down_proj)$"},
                        "batch_size": 16},
        "output": {"dir": str(work / "runs" / name), "overwrite": True},
    }
    if name == "wide":
        cfg["model"]["tiny"].update(hidden_size=256, intermediate_size=688)
    elif name == "big":  # 30 M parameters: weights, gradients and AdamW (~0.5 GB) are no longer lost in the runtime
        cfg["model"]["tiny"].update(hidden_size=768, intermediate_size=2048, num_hidden_layers=4, num_attention_heads=12,
                                    num_key_value_heads=12, vocab_size=2048)
        cfg["training"]["num_train_epochs"] = 1
    elif name == "long":
        path = work / "long.jsonl"
        _long_corpus(path, rows=1200, words=110)
        cfg["data"] = {"source": "file", "path": str(path), "template": "plain", "text_column": "text"}
        cfg["model"]["max_length"] = 256
        cfg["model"]["loss_on"] = "all"
        cfg["training"]["num_train_epochs"] = 1
        cfg["attribution"]["queries"] = [{"prompt": "the river near the old mill", "completion": " runs north to the sea"},
                                         {"prompt": "a farmer from the valley", "completion": " sold grain in the town"}]
    return cfg


def _long_corpus(path: Path, rows: int, words: int) -> None:
    rng = random.Random(0)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "ru", "te", "vo", "za", "ne") for b in ("ran", "mil", "dor", "sek", "pol", "tun")]
    vocab += "the a river mill farmer town sea grain north old valley near runs sold in to from of and".split()
    with path.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"text": " ".join(rng.choice(vocab) for _ in range(rng.randint(words // 2, words)))}) + "\n")


def _run(cmd: list[str], env: dict) -> dict:
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}):\n{out[-3000:]}")
    return {"seconds": wall, "peak_rss_bytes": usage.ru_maxrss * 1024, "loadavg_before": load,
            "loadavg_after": os.getloadavg(), "output_tail": out[-400:]}


def check(name: str, work: Path, env: dict) -> dict:
    cfg = _config(name, work)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.rmtree(work / "runs" / name, ignore_errors=True)
    t0 = time.perf_counter()
    planned = subprocess.run([*CLI, "plan", "--config", str(path), "--json"], env=env, capture_output=True, text=True)
    if planned.returncode:
        raise SystemExit(f"plan failed:\n{planned.stderr[-3000:]}")
    plan = json.loads(planned.stdout)
    plan_s = time.perf_counter() - t0
    stages = {}
    for stage, args in STAGES.items():
        measured = _run([*CLI, *args, "--config", str(path)], env)
        pred = plan["stages"][stage]
        row = {"predicted_s": pred["seconds"], "measured_s": measured["seconds"],
               "predicted_peak_mib": pred["peak_bytes"] / 2**20, "measured_peak_mib": measured["peak_rss_bytes"] / 2**20,
               "loadavg_before": measured["loadavg_before"], "loadavg_after": measured["loadavg_after"],
               "predicted_time_parts": pred["time_parts"]}
        row["time_ratio"] = row["predicted_s"] / row["measured_s"]
        row["memory_ratio"] = row["predicted_peak_mib"] / row["measured_peak_mib"]
        row["time_within_30pct"] = abs(row["time_ratio"] - 1) <= TOLERANCE
        row["memory_within_30pct"] = abs(row["memory_ratio"] - 1) <= TOLERANCE
        stages[stage] = row
        print(f"{name:5} {stage:9} time {row['predicted_s']:6.1f} s pred / {row['measured_s']:6.1f} s meas "
              f"({row['time_ratio']:.2f})  peak {row['predicted_peak_mib']:6.0f} / {row['measured_peak_mib']:6.0f} MiB "
              f"({row['memory_ratio']:.2f})  load {measured['loadavg_before'][0]:.1f}", flush=True)
    return {"config": cfg, "plan_seconds": plan_s, "model_params": plan["model"]["params"], "dim": plan["dim"],
            "workload": plan["workload"], "calibration": plan["calibration"], "store_predicted_bytes": plan["store"]["total"],
            "store_measured_bytes": sum(p.stat().st_size for p in RunLayout(work / "runs" / name).store_dir.rglob("*")
                                        if p.is_file()),
            "stages": stages}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "wide", "long", "big"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    work = Path(tempfile.mkdtemp(prefix="plan_check-"))
    res = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
           "note": ("wall times are upper bounds: 2 CPU cores shared with other jobs; the plan calibrates at the load of "
                    "its own moment, so a load change between plan and run moves the ratio"),
           "tolerance": TOLERANCE, "configs": {}}
    try:
        for name in a.configs:
            res["configs"][name] = check(name, work, env)
            res["machine"]["loadavg_end"] = os.getloadavg()
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [s for c in res["configs"].values() for s in c["stages"].values()]
    res["summary"] = {"time_within": sum(r["time_within_30pct"] for r in rows),
                      "memory_within": sum(r["memory_within_30pct"] for r in rows), "of": len(rows)}
    a.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps(res["summary"]))
    return res


if __name__ == "__main__":
    main()
