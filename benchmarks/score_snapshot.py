"""Score matrices of every registered method on two fixed runs: saved once, checked after a
refactor (a refactor changes no score).

    .venv/bin/python benchmarks/score_snapshot.py --run small --save   # tests/fixtures/scores/small.npz
    .venv/bin/python benchmarks/score_snapshot.py --run demo --save    # benchmarks/results/score_snapshot_demo.npz
    .venv/bin/python benchmarks/score_snapshot.py --run demo --check   # compare; writes score_snapshot_demo.json
    .venv/bin/python benchmarks/score_snapshot.py --run small --add fused   # a new method joins the saved file

Runs:
- `small`: the method tests' planted run (tests/pipeline_config.py `small_config` trained for
  6 epochs, as the `planted_run` fixture does: 55 rows, 3 queries, a checkpoint every 3 steps).
  `tests/test_scores_unchanged.py` recomputes it in the suite and compares with the saved file.
- `demo`: the `datablame demo` configuration with checkpoints every 170 steps and the per-method
  options of benchmarks/methods_demo.py (544 rows, 8 queries).

Every method in the registry is run with `api.attribute` in one process (shared features are
computed once, as a user running them together would see); `datamodels` first needs the LDS
subset models, trained by `api.lds` (`--lds-subsets`, serial, cached under the run). The npz
holds one [queries, rows] float64 matrix per method, plus `__query_ids__`, `__row_ids__` and
`__machine__` (CPU model and kernel capability, torch/numpy versions, threads). A check compares
each method's matrix with the saved one: max |a - b| / max(|b|, tiny) over the matrix (relative
to the matrix scale, so near-zero entries do not inflate it) and whether the two are
bit-identical; it fails above 1e-6 on the machine the snapshot was saved on, and above the
measured cross-machine bounds (CROSS_MACHINE_RTOL, below) on another.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from datablame.layout import RunLayout

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SAVED = {"small": REPO / "tests" / "fixtures" / "scores" / "small.npz",
         "demo": RESULTS / "score_snapshot_demo.npz"}
LDS_SUBSETS = {"small": 4, "demo": 8}
# the exact Hessian's CG needs a positive-definite H + damping: the tests' one-layer setting
# (tests/methods/test_influence_hessian.py); the demo run takes methods_demo.py's OPTIONS
SMALL_OPTIONS = {"hessian_influence": {"pattern": r"layers\.1\.self_attn\.v_proj$", "solver": "cg",
                                       "damping_scale": 1.0, "cg_tol": 1e-2, "batch_size": 64}}
RTOL = 1e-6
# Across CPUs the float kernels differ (instruction set, reduction order), and training the run
# carries that into the weights: the same code on an AVX-512/AMX Xeon vs the machine the small
# snapshot was first saved on moved scores by up to 1.6e-5 (activation_gradient; embedding
# cosine, which involves no training, 3.6e-7) and hessian_influence's CG solve (cg_tol 1e-2) by
# 4.4e-3. So the strict check holds on the machine a snapshot was saved on (its `__machine__`);
# elsewhere these looser bounds apply, still far below what a changed formula moves (>1e-2).
CROSS_MACHINE_RTOL = 1e-3
CROSS_MACHINE_RTOL_BY_METHOD = {"hessian_influence": 5e-2}
# both snapshots were computed with 2 torch threads (the default on the 2-core machines they were
# saved on); another count changes float reduction order (grad_dot moves ~1e-6, the CG solve
# of hessian_influence ~4e-3), so the check pins it, whatever an earlier caller set
TORCH_THREADS = 2


def run_config(run: str, run_dir: Path):
    from datablame.config import parse_config

    if run == "small":
        sys.path.insert(0, str(REPO / "tests"))
        from pipeline_config import small_config

        cfg = small_config(run_dir, training={"num_train_epochs": 6}, attribution={"options": SMALL_OPTIONS})
        d = cfg.model_dump(mode="json")
    elif run == "demo":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from methods_demo import build_config

        d = build_config(str(run_dir)).model_dump(mode="json")
    else:
        raise SystemExit(f"unknown run {run!r}: small or demo")
    d["lds"] = {**d.get("lds", {}), "num_subsets": LDS_SUBSETS[run], "ray": {"runner": "serial"}}
    d["output"]["overwrite"] = False
    return parse_config(d, source=f"<score_snapshot {run}>")


def all_methods() -> list[str]:
    from datablame.methods import REGISTRY

    return sorted(REGISTRY)


def compute(run: str, run_dir: Path, methods: list[str] | None = None) -> dict[str, np.ndarray]:
    """Train (reused when present), the LDS subsets datamodels needs, then every method."""
    import torch

    from datablame import api
    from datablame.verify.lds import lds

    cfg = run_config(run, run_dir)
    methods = methods or all_methods()
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        api.train(cfg)
        if "datamodels" in methods:
            lds(cfg, methods=["grad_cosine"])
        result, _ = api.attribute(cfg, methods=methods, progress=False)
    finally:
        torch.set_num_threads(threads)
    scores = dict(np.load(RunLayout(run_dir).scores_npz, allow_pickle=False))
    scores["__query_ids__"] = np.array([q.query_id for q in result.queries])
    scores["__row_ids__"] = np.array([r.row_id for r in api.load_corpus(cfg)[0]])
    scores["__machine__"] = np.array(machine())
    return scores


def machine() -> str:
    """What decides float results besides the code: CPU model and kernel capability, torch and
    numpy versions, torch threads (pinned to TORCH_THREADS while computing)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # the model name, and the instruction-set flags (hashed)
        info = Path("/proc/cpuinfo").read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")]
        flags = [ln.split(":", 1)[1].strip() for ln in info if ln.startswith("flags")]
        cpu = (names[0] if names else cpu) + (f" flags {hashlib.sha256(flags[0].encode()).hexdigest()[:12]}"
                                               if flags else "")
    return (f"{cpu} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
            f"numpy {np.__version__} | threads {TORCH_THREADS}")


def tolerance(saved: dict[str, np.ndarray], method: str) -> float:
    """RTOL on the machine the snapshot was saved on, the cross-machine bound elsewhere."""
    if "__machine__" in saved and str(saved["__machine__"]) == machine():
        return RTOL
    return CROSS_MACHINE_RTOL_BY_METHOD.get(method, CROSS_MACHINE_RTOL)


def compare(now: dict[str, np.ndarray], saved: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per method: bit-identical?, max relative difference (to the saved matrix' scale), and the
    tolerance it was held to."""
    out = {}
    for key in sorted(set(now) | set(saved)):
        if key == "__machine__":
            continue
        if key not in now or key not in saved:
            out[key] = {"ok": False, "why": "missing now" if key not in now else "not in the saved file"}
            continue
        a, b = now[key], saved[key]
        if key.startswith("__"):
            same = a.shape == b.shape and bool(np.all(a == b))
            out[key] = {"ok": same, "identical": same}
            continue
        if a.shape != b.shape:
            out[key] = {"ok": False, "why": f"shape {a.shape} vs saved {b.shape}"}
            continue
        finite = np.isfinite(b)
        if not np.array_equal(np.isfinite(a), finite):
            out[key] = {"ok": False, "why": "non-finite entries differ"}
            continue
        scale = max(float(np.abs(b[finite]).max()) if finite.any() else 0.0, 1e-300)
        diff = float(np.abs(a[finite] - b[finite]).max()) / scale if finite.any() else 0.0
        same = bool(np.array_equal(a, b, equal_nan=True))
        rtol = tolerance(saved, key)
        out[key] = {"ok": diff <= rtol, "identical": same, "max_rel_diff": diff, "rtol": rtol}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=sorted(SAVED), default="small")
    ap.add_argument("--save", action="store_true", help="write the saved snapshot (overwrites it)")
    ap.add_argument("--check", action="store_true", help="compare with the saved snapshot")
    ap.add_argument("--add", nargs="+", metavar="METHOD", default=None,
                    help="compute only these (new) methods and add them to the saved file, leaving the rest as saved")
    ap.add_argument("--run-dir", type=Path, default=None, help="default runs/score-snapshot-<run>")
    args = ap.parse_args()
    if (args.save, args.check, args.add is not None).count(True) != 1:
        ap.error("pass exactly one of --save, --check and --add")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_dir = args.run_dir or REPO / "runs" / f"score-snapshot-{args.run}"
    t = time.perf_counter()
    if args.add is not None:  # the saved matrices stay as they were: they are the reference
        from datablame.utils.io import atomic_save_npz

        saved = dict(np.load(SAVED[args.run], allow_pickle=False))
        new = compute(args.run, run_dir, methods=args.add)
        if list(new["__row_ids__"]) != list(saved["__row_ids__"]):
            raise SystemExit("the run's rows differ from the saved snapshot's: not adding")
        if str(saved.get("__machine__", "")) != str(new["__machine__"]):
            raise SystemExit("this machine is not the one the snapshot was saved on: save it whole (--save) here, "
                             "or add the method on that machine")
        atomic_save_npz(SAVED[args.run], {**saved, **{m: new[m] for m in args.add}})
        print(f"added {args.add} to {SAVED[args.run]} ({time.perf_counter() - t:.0f} s)")
        return 0
    scores = compute(args.run, run_dir)
    seconds = time.perf_counter() - t
    path = SAVED[args.run]
    if args.save:
        from datablame.utils.io import atomic_save_npz

        atomic_save_npz(path, scores)
        print(f"saved {len(scores) - 3} methods to {path} ({seconds:.0f} s)")
        return 0
    from datablame.utils.io import atomic_write_json

    saved = dict(np.load(path, allow_pickle=False))
    report = compare(scores, saved)
    worst = max((v.get("max_rel_diff", 0.0) for v in report.values()), default=0.0)
    ok = all(v["ok"] for v in report.values())
    out = RESULTS / f"score_snapshot_{args.run}.json"
    atomic_write_json(out, {"run": args.run, "saved": str(path.relative_to(REPO)), "ok": ok,
                            "same_machine": tolerance(saved, "") == RTOL, "machine": machine(),
                            "max_rel_diff": worst, "seconds": round(seconds, 1), "methods": report,
                            "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count()})
    for k, v in report.items():
        print(f"{k:24s} {'ok' if v['ok'] else 'DIFFERENT'} {v}")
    print(f"{'all equal' if ok else 'SCORES CHANGED'}: largest relative difference {worst:.3g}; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
