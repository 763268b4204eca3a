"""`datablame index --workers N`: featurize the run's store from N processes under torchrun.

`index_distributed` checks the request, launches

    torchrun --nproc-per-node N -m datablame.api_distributed --config <run.yaml> [--overwrite]

(each rank loads the run's model and the same projection, featurizes a contiguous range of the
shards still to do into the same store; rank 0 prepares the manifest before and merges the
ranks' part files into it after a gloo barrier: `datablame.store.distributed`), then runs
`api.index` in this process, which finds every shard done (nothing is featurized again) and
builds the FAISS and text indices and the summary as usual. A killed rank's finished shards
are kept: rerunning resumes with any number of workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from datablame.errors import DatablameError


def _inputs(cfg):
    from datablame.inputs import prepare_inputs

    inputs, _ = prepare_inputs(cfg, queries=False, use_store=False)
    return inputs


def index_distributed(
    config_path: str | Path, workers: int, *, faiss: str = "auto", overwrite: bool = False, progress: bool = True,
    text_indices: bool = True, timeout_s: float | None = None, faiss_metric: str = "cosine",
) -> dict:
    """Featurize the store with `workers` torchrun processes, then finish like `api.index`."""
    from datablame import api
    from datablame.inputs import load_corpus
    from datablame.store.distributed import check_workers

    cfg = api.load_config(config_path)
    check_workers(len(load_corpus(cfg)[0]), cfg.attribution.store.shard_rows, workers)
    torchrun = shutil.which("torchrun", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", f"--nproc-per-node={workers}", "-m", "datablame.api_distributed", "--config", str(config_path)]
    if overwrite:
        cmd.append("--overwrite")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))}
    done = subprocess.run(cmd, env=env, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise DatablameError(
            f"a featurizing worker failed (torchrun exited with {done.returncode}; its output is above).",
            "fix what it reports and rerun `datablame index --workers N`: finished shards are kept.",
        )
    return api.index(cfg, faiss=faiss, overwrite=False, progress=progress, text_indices=text_indices,
                     faiss_metric=faiss_metric)


def load_run(config_path: str | Path):
    """(config, inputs, layout) of the run: what every rank or Ray task loads (its model too)."""
    from datablame import api
    from datablame.layout import RunLayout

    cfg = api.load_config(config_path)
    inputs = _inputs(cfg)
    return cfg, inputs, RunLayout(inputs.run_dir)


def prepare(cfg, inputs, layout, world: int, *, overwrite: bool = False) -> dict:
    """The one manifest writer's first step (torchrun rank 0, or the Ray driver): create or
    check the store for this run's model, rows and projection; fold in a killed run's shards."""
    from datablame.features.gradients import featurizer_for
    from datablame.store.distributed import prepare_store

    feat = featurizer_for(inputs)
    return prepare_store(layout.store_dir, n_rows=len(inputs.corpus), row_ids=[r.row_id for r in inputs.corpus],
                         identity=inputs.identity().store(), dim=feat.dim, shard_size=cfg.attribution.store.shard_rows,
                         world=world, config=cfg.model_dump(mode="json"), overwrite=overwrite)


def featurize_share(inputs, layout, rank: int, world: int) -> int:
    """Featurize share `rank` of `world` of the shards the manifest does not list yet (each
    shard and its row losses written atomically, recorded in the share's part file); the one
    shard-range function of both the torchrun ranks and the Ray tasks. Returns the rows."""
    from datablame.features.gradients import featurize_range
    from datablame.store.distributed import featurize_rank
    from datablame.utils.io import atomic_save_npy

    def featurize(start: int, stop: int):
        f, losses = featurize_range(inputs, start, stop)
        layout.store_row_losses_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(layout.row_losses_file(start, stop), losses.numpy())
        return f

    return featurize_rank(layout.store_dir, featurize, rank=rank, world=world)


def run_rank(config_path: str | Path, *, overwrite: bool = False) -> tuple[int, float]:
    """One torchrun rank: prepare (rank 0) | barrier | featurize this rank's shards | barrier |
    merge (rank 0). Returns the rows this rank featurized and its featurizing seconds."""
    import torch.distributed as dist

    from datablame.store.distributed import merge_parts

    timeout = timedelta(seconds=float(os.environ.get("DATABLAME_BARRIER_TIMEOUT_S", 86400)))
    dist.init_process_group("gloo", timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        cfg, inputs, layout = load_run(config_path)
        if rank == 0:
            prepare(cfg, inputs, layout, world, overwrite=overwrite)
        dist.barrier()
        t0 = time.perf_counter()
        rows = featurize_share(inputs, layout, rank, world)
        seconds = time.perf_counter() - t0
        dist.barrier()
        if rank == 0:
            merge_parts(layout.store_dir)
        return rows, seconds
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m datablame.api_distributed", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        rows, seconds = run_rank(a.config, overwrite=a.overwrite)
    except DatablameError as err:
        print(f"error: {err.problem}\nfix: {err.fix}", file=sys.stderr)
        sys.exit(2)
    print(f"rank {os.environ.get('RANK', '0')}: featurized {rows} rows in {seconds:.3f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
