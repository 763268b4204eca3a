"""`datablame index --ray`: featurize the run's store as Ray tasks (issue 21, item 2).

The same shard-range featurizing as the torchrun path (`api_distributed.featurize_share`, the
same model, projection and store), with Ray scheduling instead of torchrun:

1. the driver (this process) checks the request and reaches Ray: `ray.init(address=...)` joins
   a running cluster, no address starts a local instance with `num_cpus` CPUs; an address that
   does not answer is one clear error before any model is loaded;
2. the driver prepares the manifest (`store.distributed.prepare_store`: created or checked,
   finished shards of a killed run folded in) and submits one task per non-empty share of the
   shards still to do; each task loads the run, featurizes its contiguous shard range (each
   shard written atomically, recorded in its own part file) and returns its row count;
3. the driver merges the part files into the manifest in one atomic write (also when a task
   failed: what finished is kept), then finishes like `api.index` (FAISS, text indices).

A failed or killed task loses only the shard it was writing: the rerun recomputes the shards
missing from the manifest (also ones deleted or damaged since) and keeps the rest. The run
directory must be readable and writable at the same path on every Ray node (local: always).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError

ADDRESS_FIX = ("start a cluster there with `ray start --head` (it prints the address to pass), correct "
               "--ray-address, or leave --ray-address out to run a local Ray instance")


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a Ray address (`ray.init` would wait for minutes)."""
    if address == "auto":
        return  # Ray looks the running local cluster up itself and says so when there is none
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DatablameError(f"the Ray address {address!r} (--ray-address / attribution.store.ray_address) is not host:port or ray://host:port.",
                             "e.g. --ray-address 10.0.0.5:6379, ray://head:10001 or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise DatablameError(f"no Ray cluster answers at {address} (--ray-address / attribution.store.ray_address: {err.strerror or err}).",
                             ADDRESS_FIX) from None


def start_ray(address: str | None, num_cpus: int | None) -> tuple[Any, bool]:
    """(ray, whether this call started it): reuse an initialized Ray, else join `address` or
    start a local instance with `num_cpus` CPUs."""
    import ray

    if ray.is_initialized():
        return ray, False
    if address:
        check_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=num_cpus, object_store_memory=256 * 2**20)  # results are a few bytes
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise DatablameError(f"cannot reach {where} ({str(err).strip().splitlines()[0][:200]}).",
                             ADDRESS_FIX) from None
    return ray, True


def _task(config_path: str, rank: int, world: int, threads: int) -> dict[str, Any]:
    """One Ray task: load the run (model, projection) and featurize share `rank` of `world`."""
    import torch

    from datablame.api_distributed import featurize_share, load_run

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    _, inputs, layout = load_run(config_path)
    t1 = time.perf_counter()
    rows = featurize_share(inputs, layout, rank, world)
    return {"rank": rank, "rows": rows, "load_s": t1 - t0, "featurize_s": time.perf_counter() - t1,
            "node": socket.gethostname(), "pid": os.getpid()}


def featurize_ray(
    config_path: str | Path, *, workers: int | None = None, address: str | None = None, num_cpus: int | None = None,
    threads_per_task: int = 1, overwrite: bool = False,
) -> dict[str, Any]:
    """Featurize the shards missing from the run's store as Ray tasks and merge the manifest;
    returns what ran (tasks, rows per task, seconds). `workers`: tasks (default: the cluster's
    CPUs / threads_per_task, at most one per shard still to do)."""
    from datablame import api
    from datablame.api_distributed import load_run, prepare
    from datablame.inputs import load_corpus
    from datablame.store.distributed import check_workers, merge_parts, rank_shards

    config_path = Path(config_path).resolve()
    cfg = api.load_config(config_path)
    n_shards = check_workers(len(load_corpus(cfg)[0]), cfg.attribution.store.shard_rows, 1 if workers is None else workers)
    t0 = time.perf_counter()
    ray, started = start_ray(address, num_cpus)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        world = workers or max(1, min(n_shards, int(cpus // threads_per_task)))
        _, inputs, layout = load_run(config_path)
        m = prepare(cfg, inputs, layout, world, overwrite=overwrite)
        share_shards = {r: len(rank_shards(m, r, world)) for r in range(world)}
        shares = [r for r, n in share_shards.items() if n]
        task = ray.remote(num_cpus=threads_per_task, max_retries=0)(_task)
        t_submit = time.perf_counter()
        pending = {task.remote(str(config_path), r, world, threads_per_task): r for r in shares}
        done_tasks: list[dict[str, Any]] = []
        failed: list[tuple[int, BaseException]] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            rank = pending.pop(ready[0])
            try:
                done_tasks.append(ray.get(ready[0]))
            except Exception as err:  # a task died or raised: the others finish, their shards are kept
                failed.append((rank, getattr(err, "cause", None) or err))
        tasks_s = time.perf_counter() - t_submit
        merge_parts(layout.store_dir)  # one atomic manifest write, also after a failure
    finally:
        if started:
            ray.shutdown()
    if failed:
        rank, cause = failed[0]
        if isinstance(cause, DatablameError):
            raise cause
        last = str(cause).strip().splitlines()[-1][:300] if str(cause).strip() else ""
        raise DatablameError(
            f"{len(failed)} of {len(shares)} Ray featurizing tasks failed (task {rank}: {type(cause).__name__}: {last}).",
            "fix the cause and rerun `datablame index --ray`: finished shards are kept, only the rest is featurized.",
        )
    return {"runner": "ray", "address": address, "cluster_cpus": cpus, "tasks": len(shares), "world": world,
            "shards": sum(share_shards.values()),
            "rows": sum(t["rows"] for t in done_tasks), "task_results": sorted(done_tasks, key=lambda t: t["rank"]),
            "tasks_s": tasks_s, "seconds": time.perf_counter() - t0}


def index_ray(
    config_path: str | Path, *, workers: int | None = None, address: str | None = None, num_cpus: int | None = None,
    threads_per_task: int = 1, faiss: str = "auto", overwrite: bool = False, progress: bool = True,
    text_indices: bool = True, faiss_metric: str = "cosine",
) -> dict:
    """`datablame index --ray`: featurize as Ray tasks (`featurize_ray`), then finish like
    `api.index` (which finds every shard done) with the FAISS and text indices and summary."""
    from datablame import api
    from datablame.layout import RunLayout
    from datablame.utils.io import atomic_write_json

    ran = featurize_ray(config_path, workers=workers, address=address, num_cpus=num_cpus,
                        threads_per_task=threads_per_task, overwrite=overwrite)
    cfg = api.load_config(config_path)
    summary = api.index(cfg, faiss=faiss, overwrite=False, progress=progress,
                        text_indices=text_indices, faiss_metric=faiss_metric)
    summary["ray"] = ran
    summary["shards_computed"] = ran["shards"]  # featurized by the tasks; api.index found them done
    summary["shards_reused"] = summary["shards"] - ran["shards"]
    if ran["rows"] and ran["tasks_s"]:
        summary["rows_per_s"] = ran["rows"] / ran["tasks_s"]
    atomic_write_json(RunLayout(cfg.output.dir).index_summary, summary)  # api.index's, with what Ray ran
    return summary
