"""2-rank torch.distributed smoke test for benchmarks/gpu_suite.sh (run under torchrun).

Each rank all-reduces a tensor on its device (NCCL on GPUs, gloo on CPU) and checks the sum,
then rank 0 writes the backend, world size, devices and the all-reduce time as JSON to --out.

    torchrun --standalone --nproc-per-node 2 benchmarks/dist_smoke.py --backend gloo --out smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["nccl", "gloo"], default="gloo")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    dist.init_process_group(a.backend, timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}") if a.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    x = torch.full((1 << 20,), float(rank + 1), device=device)
    dist.all_reduce(x)  # warm-up
    x.fill_(float(rank + 1))
    t0 = time.perf_counter()
    dist.all_reduce(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    expected = world * (world + 1) / 2
    ok = bool(torch.all(x == expected).item())
    names = [None] * world
    dist.all_gather_object(names, str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu")
    if rank == 0:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"backend": a.backend, "world": world, "devices": names, "allreduce_ok": ok,
                                     "allreduce_4MiB_s": seconds, "torch": torch.__version__}, indent=2) + "\n")
    dist.destroy_process_group()
    if not ok:
        raise SystemExit(f"rank {rank}: all_reduce gave {x[0].item()}, expected {expected}")


if __name__ == "__main__":
    main()
