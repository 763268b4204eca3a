"""Run many retraining jobs as Ray tasks, resumably.

Each finished job is written atomically to `<out_dir>/jobs/<key>.json` by the driver as soon
as its task returns, so a sweep that is interrupted (Ctrl-C, a killed process, a failing
job) loses at most the trainings that were running; the next call loads the finished ones
and submits only the rest. Ray does the scheduling: a local instance with `num_cpus` CPUs
by default, or a running cluster when `address` is given (the run directory must then be
readable from the workers; results come back through Ray, so only the driver writes).
`runner: serial` runs the jobs one after another in this process (debugging, tiny tests).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datablame.config import RayConfig
from datablame.errors import DatablameError
from datablame.grads.progress import EtaLog
from datablame.layout import sweep_jobs_dir
from datablame.utils.io import atomic_write_json
from datablame.verify.retrain import RetrainContext, RetrainJob, execute, job_key

log = logging.getLogger("datablame")


@dataclass
class SweepOutcome:
    results: dict[str, dict[str, Any]]  # job key -> job record
    keys: list[str]  # key of each requested job, in request order
    trained: int  # jobs trained by this call
    reused: int  # jobs found finished on disk
    seconds: float
    runner: str
    cpus: float | None = None
    failed: list[str] = field(default_factory=list)

    def record(self, i: int) -> dict[str, Any]:
        return self.results[self.keys[i]]


def job_path(out_dir: Path, key: str) -> Path:
    return sweep_jobs_dir(out_dir) / f"{key}.json"


def load_finished(out_dir: Path, key: str) -> dict[str, Any] | None:
    path = job_path(out_dir, key)
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # written atomically, so this is foreign damage: train it again
    return rec if rec.get("key") == key and "loss" in rec else None


def _ray_execute(ctx: RetrainContext, job: RetrainJob, threads: int) -> dict[str, Any]:
    return execute(ctx, job, threads=threads)


def _start_ray(cfg: RayConfig) -> tuple[Any, bool]:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a core dependency
        raise DatablameError("ray is not installed", "pip install ray==2.60.0, or set ray.runner: serial") from None
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if cfg.address:
        kwargs["address"] = cfg.address
    else:
        # a local instance: bounded CPUs; a small object store (records are a few kB)
        kwargs["num_cpus"] = cfg.num_cpus
        kwargs["object_store_memory"] = 256 * 2**20
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise DatablameError(
            f"cannot start or join Ray ({str(err).splitlines()[0][:200]})",
            "check ray.address (null starts a local instance), or set ray.runner: serial",
        ) from None
    return ray, True


def run_jobs(
    ctx: RetrainContext,
    jobs: Sequence[RetrainJob],
    out_dir: str | Path,
    ray_cfg: RayConfig,
    *,
    desc: str = "retraining",
    progress: bool = True,
) -> SweepOutcome:
    """Train every job not already finished under `out_dir`; return all their records."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    identity = ctx.identity()
    keys = [job_key(ctx, j, identity) for j in jobs]
    unique: dict[str, RetrainJob] = {}
    for k, j in zip(keys, jobs, strict=True):
        unique.setdefault(k, j)
    results: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, RetrainJob]] = []
    for k, j in unique.items():
        rec = load_finished(out_dir, k)
        if rec is None:
            todo.append((k, j))
        else:
            results[k] = rec
    reused = len(results)
    outcome = SweepOutcome(results, keys, 0, reused, 0.0, ray_cfg.runner)
    if todo:
        log.info("%s: %d jobs to train, %d already done (%s)", desc, len(todo), reused, sweep_jobs_dir(out_dir))
    bar = tqdm(total=len(todo), desc=desc, disable=not progress or not todo, unit="model")  # shows an ETA
    # after the first job (serial) or the first round of parallel ones: s/model x models left
    at_once = 1 if ray_cfg.runner == "serial" else (ray_cfg.num_cpus or os.cpu_count() or 1) // ray_cfg.threads_per_job
    eta = EtaLog(desc, len(todo), "model", after=max(1, at_once), min_total_s=0.0)

    def finish(key: str, rec: dict[str, Any]) -> None:
        rec = {"key": key, "identity": identity, **rec}
        atomic_write_json(job_path(out_dir, key), rec)
        results[key] = rec
        outcome.trained += 1
        bar.update(1)
        eta.update(outcome.trained)

    try:
        if todo and ray_cfg.runner == "serial":
            for k, j in todo:
                finish(k, execute(ctx, j))
        elif todo:
            _run_ray(ctx, todo, ray_cfg, finish, outcome)
    finally:
        bar.close()
        outcome.seconds = time.perf_counter() - t0
    return outcome


def _run_ray(ctx, todo, ray_cfg: RayConfig, finish, outcome: SweepOutcome) -> None:
    ray, started = _start_ray(ray_cfg)
    try:
        outcome.cpus = ray.cluster_resources().get("CPU")
        task = ray.remote(num_cpus=ray_cfg.threads_per_job, max_retries=0)(_ray_execute)
        ctx_ref = ray.put(ctx)
        pending = {task.remote(ctx_ref, j, ray_cfg.threads_per_job): (k, j) for k, j in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key, job = pending.pop(done[0])
            try:
                rec = ray.get(done[0])
            except Exception as err:  # a failing job: keep what finished, stop the rest
                for ref in pending:
                    ray.cancel(ref, force=True)
                outcome.failed.append(key)
                cause = getattr(err, "cause", None) or err
                if isinstance(cause, DatablameError):
                    raise cause from None
                raise DatablameError(
                    f"retraining job {key} ({job.kind}, seed {job.seed}) failed: "
                    f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1][:300] if str(cause).strip() else ''}",
                    "fix the cause and rerun the same command: finished jobs are kept and not retrained",
                ) from None
            finish(key, rec)
    finally:
        if started:
            ray.shutdown()
