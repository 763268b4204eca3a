"""Shared helpers for the benchmark scripts: timing, peak memory, profiling, machine facts,
the command line, and peer adapters (bergson). The small planted run of the method tests and
its planted-gap measure live in tests/ (`pipeline_config.small_config`, `planted_gap`), the
one copy both use: a script adds tests/ to sys.path to import them.

Memory on CPU: tracemalloc does not see torch's allocations, so peak memory is the
process RSS, sampled every ~1 ms in a thread while the call runs, minus the RSS just
before it (after `malloc_trim`). `use_exact_malloc()` first makes glibc serve every
allocation >= 64 KiB with its own mmap, so freed tensors leave RSS at once and the
sampled peak follows live memory instead of the allocator's high-water mark. It slows
allocation down, so call it only after the timing passes. On CUDA: the increase of
`torch.cuda.max_memory_allocated` over the allocation before the call.
"""

from __future__ import annotations

import contextlib
import cProfile
import ctypes
import datetime as dt
import json
import math
import os
import platform
import pstats
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): RSS peaks are then allocator high-water marks
        return None


def use_exact_malloc() -> bool:
    """Large allocations straight from mmap and returned on free (glibc only)."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 16) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 16))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of fn(), with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory the call adds on top of what was live before it (see module doc)."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    import psutil

    proc = psutil.Process()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    base = proc.memory_info().rss
    high = [base]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            high[0] = max(high[0], proc.memory_info().rss)
            time.sleep(0.001)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        fn()
    finally:
        stop.set()
        th.join()
    high[0] = max(high[0], proc.memory_info().rss)
    return int(high[0] - base)


class OtherLoad:
    """Share of the machine's CPU capacity used by *other* processes between start and stop
    (system-wide busy time minus this process's): timings under load are not comparable."""

    def __init__(self) -> None:
        import psutil

        self._ps, self._proc = psutil, psutil.Process()
        self._t0, self._sys0, self._own0 = time.perf_counter(), self._busy(), self._own()

    def _busy(self) -> float:
        t = self._ps.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _own(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def share(self) -> float:
        wall = (time.perf_counter() - self._t0) * (os.cpu_count() or 1)
        other = (self._busy() - self._sys0) - (self._own() - self._own0)
        return max(0.0, other / wall) if wall > 0 else 0.0


def top_ops(fn: Callable[[], object], device: torch.device, steps: int = 2, n: int = 12) -> list[dict]:
    """torch.profiler: the n ops with the most self time (per step), share of the total."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    sync(device)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    ev = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in ev) or 1.0
    ev.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {
            "op": e.key,
            "calls_per_step": e.count / steps,
            "self_ms_per_step": getattr(e, attr) / 1e3 / steps,
            "share": getattr(e, attr) / total,
        }
        for e in ev[:n]
    ]


def top_python(fn: Callable[[], object], keep: tuple[str, ...], steps: int = 2, n: int = 12) -> list[dict]:
    """cProfile: functions from files whose path contains one of `keep`, by cumulative time."""
    fn()
    pr = cProfile.Profile()
    pr.enable()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    wall = (time.perf_counter() - t0) / steps
    pr.disable()
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in pstats.Stats(pr).stats.items():
        if any(k in file for k in keep):
            short = "/".join(Path(file).parts[-2:])
            rows.append({
                "function": f"{short}:{line}({func})",
                "calls_per_step": nc / steps,
                "cum_ms_per_step": ct * 1e3 / steps,
                "own_ms_per_step": tt * 1e3 / steps,
                "cum_share_of_step": ct / steps / wall,
            })
    rows.sort(key=lambda r: r["cum_ms_per_step"], reverse=True)
    return rows[:n]


def machine(device: torch.device) -> dict:
    import transformers

    cpu = platform.processor()
    with contextlib.suppress(OSError):  # no /proc (macOS): keep platform.processor()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def md_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def command_line() -> str:
    """How this script was started, for the JSON ('python benchmarks/x.py --flag ...')."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):  # a script outside the repo keeps its absolute path
        script = script.relative_to(Path(__file__).resolve().parents[1])
    return " ".join(["python", str(script), *sys.argv[1:]])


def set_mode(model, *, train: bool, grad: str) -> None:
    """grad: 'all' (training), 'none' (frozen), 'embed' (bergson: only the input embedding)."""
    model.train(train)
    model.requires_grad_(grad == "all")
    if grad == "embed":
        model.get_input_embeddings().requires_grad_(True)


class Bergson:
    """bergson 2.5.1 peer: its GradientCollector + CollectorComputer, built as
    `collect_gradients` builds them, over `rows` (a datablame `Encoded`); `step` is the
    loop body of `CollectorComputer.run_with_collector_hooks` for one batch."""

    def __init__(self, model, rows, targets: set[str], k: int, device, tmp: str):
        import bergson
        from bergson.collector.collector import CollectorComputer
        from bergson.collector.gradient_collectors import GradientCollector
        from bergson.config.config import IndexConfig, PreprocessConfig
        from bergson.data import pad_and_tensor
        from datasets import Dataset

        self.version, self.pad_and_tensor = bergson.__version__, pad_and_tensor
        self.model, self.device = model, device
        self.data = Dataset.from_dict({"input_ids": rows.input_ids, "labels": rows.labels,
                                       "length": [len(r) for r in rows.input_ids]})
        self.targets, self.tmp = targets, tmp
        self.settings = dict(projection_dim=k, projection_type="normal", loss_reduction="mean",
                             loss_fn="ce", precision=str(next(model.parameters()).dtype))
        set_mode(model, train=False, grad="embed")  # as bergson's setup_model_and_peft leaves it
        self.cfg = IndexConfig(run_path=os.path.join(tmp, "bergson_step"), **self._icfg())
        self.processor = self._processor()
        self.collector = GradientCollector(
            model=model.base_model, cfg=self.cfg, processor=self.processor, target_modules=targets,
            data=self.data, preprocess_cfg=PreprocessConfig(), attention_cfgs={},
            filter_modules=self.cfg.filter_modules)
        self.computer = CollectorComputer(model=model, data=self.data, collector=self.collector,
                                          batches=None, cfg=self.cfg)
        self.dim = sum(math.prod(s) for s in self.collector.shapes().values())

    def _icfg(self) -> dict:
        s = self.settings
        return dict(projection_dim=s["projection_dim"], projection_type=s["projection_type"],
                    loss_reduction=s["loss_reduction"], loss_fn=s["loss_fn"])

    def _processor(self):
        from bergson.gradients import GradientProcessor

        return GradientProcessor(projection_dim=self.settings["projection_dim"],
                                 projection_type=self.settings["projection_type"])

    def step(self, indices: list[int]) -> None:
        batch = self.data[indices]
        x, y, _, mask = self.pad_and_tensor(batch["input_ids"], labels=batch.get("labels"),
                                            device=self.device, sync_max_len=False)
        with self.collector.with_batch(mask):
            losses = self.computer.forward_backward(self.model, x, y, batch)
            sync(self.device)
        self.collector.process_batch(indices, losses=losses)

    def end_to_end(self, batch_size: int) -> float:
        """Wall seconds of `bergson.collect_gradients` over all rows, setup and teardown included."""
        import bergson
        from bergson.config.config import IndexConfig

        cfg = IndexConfig(run_path=os.path.join(self.tmp, "bergson_e2e"), **self._icfg())
        n = len(self.data)
        batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
        set_mode(self.model, train=False, grad="embed")
        return timed(lambda: bergson.collect_gradients(
            self.model, self.data, self._processor(), cfg, batches=batches,
            target_modules=self.targets), self.device)


def lds_sweep(cfg, num_subsets: int, alpha: float, num_cpus: int, *, progress: bool = True):
    """The LDS subset models of a run, trained once and cached under <run>/lds/jobs as
    `datablame lds` does: masks [M, N], subset-model query losses [M, Q], and what it cost."""
    import numpy as np

    from datablame.config import RayConfig
    from datablame.inputs import prepare_inputs
    from datablame.layout import RunLayout
    from datablame.runs import prepare_run_dir
    from datablame.verify.common import retrain_context
    from datablame.verify.lds import subset_masks
    from datablame.verify.retrain import RetrainJob
    from datablame.verify.sweep import run_jobs

    run_dir = prepare_run_dir(cfg)
    inputs = prepare_inputs(cfg)[0]
    masks = subset_masks(len(inputs.corpus), alpha, num_subsets, cfg.lds.seed)
    ctx = retrain_context(cfg, run_dir, inputs.corpus, inputs.queries, generate=False)
    jobs = [RetrainJob(cfg.training.seed, removed=tuple(int(i) for i in np.flatnonzero(~masks[j])), kind="lds-subset",
                       tags={"subset": j, "alpha": alpha, "subset_seed": cfg.lds.seed}) for j in range(len(masks))]
    ray = RayConfig(num_cpus=num_cpus) if num_cpus > 1 else RayConfig(runner="serial")
    outcome = run_jobs(ctx, jobs, RunLayout(run_dir).lds_dir, ray, desc="LDS subsets", progress=progress)
    losses = np.array([np.asarray(outcome.record(i)["loss"], dtype=float) for i in range(len(jobs))])
    return masks, losses, {"subset_models": len(jobs), "alpha": alpha, "trained": outcome.trained,
                           "reused": outcome.reused, "sweep_s": outcome.seconds,
                           "train_s_per_model": float(np.mean([r["train_seconds"] for r in outcome.results.values()]))}
