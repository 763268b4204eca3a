"""The demo run shared by the verification benchmarks (verify_demo, lds_demo): the
`datablame demo` configuration (planted facts, 544 rows, 4-layer hidden-128 tiny Llama,
15 epochs) in its own run directory, trained and attributed once."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from datablame.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def demo_run(run_dir: str, methods: list[str]) -> tuple[object, Path, dict]:
    """Train (once) and attribute (once per method set) the demo config in `run_dir`;
    returns (cfg, path of its YAML for the CLI, timings)."""
    from datablame import api
    from datablame.demo import demo_config

    cfg = demo_config(run_dir)
    cfg = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"methods": methods})})
    yaml_path = Path(f"{run_dir}.yaml")
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(cfg.to_yaml(), encoding="utf-8")
    timing = {}
    t = time.perf_counter()
    api.train(cfg)
    timing["train_s"] = time.perf_counter() - t
    scores = RunLayout(run_dir).scores_npz
    have = set()
    if scores.is_file():
        import numpy as np

        with np.load(scores) as z:
            have = set(z.files)
    if not set(methods) <= have:
        t = time.perf_counter()
        api.attribute(cfg, methods=methods)
        timing["attribute_s"] = time.perf_counter() - t
    return cfg, yaml_path, timing


def run_cli(args: list[str]) -> tuple[float, int]:
    """Run `datablame <args>` as its own process (the one command a user types); wall seconds."""
    cmd = [str(Path(sys.executable).parent / "datablame"), *args]
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    t = time.perf_counter()
    rc = subprocess.call(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t, rc


def loadavg() -> list[float]:
    return list(os.getloadavg())
