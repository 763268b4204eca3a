"""Query latency: top-10 rows for one query over N stored rows, exact streaming vs IVF.

Synthetic clustered Gaussian features (so IVF behaves as on real, clustered gradients) are
written as real fp16 stores with `build_store` under a temp dir (or --work-dir, reused on
rerun thanks to resume). For each size: p50/p95 latency of single-query top-10 for exact
streaming search (CPU torch) and for an IVF index whose nprobe is raised until recall@10 >= 0.95
on held-out tuning queries; recall is then reported on the timed queries vs exact results.

    .venv/bin/python benchmarks/query.py --sizes 10000          # seconds
    .venv/bin/python benchmarks/query.py                        # 1e4, 1e5, 1e6 (minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Sleeping (not spinning) OpenMP workers: on a small or shared CPU, spinning workers of torch and
# faiss stall every chunk of the streaming search (10x slower p50 when another process runs).
# Must be set before torch/faiss load their OpenMP runtimes; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datablame.store import build_faiss_index, build_store, exact_topk, open_store  # noqa: E402
from datablame.store.faiss_index import recall_at_k_vs_exact  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "query_latency.json"
K = 10


class Clusters:
    """Clustered Gaussian rows: center[c] + noise, generated per chunk from a seeded rng."""

    def __init__(self, n_rows: int, dim: int, seed: int, spread: float) -> None:
        self.n_clusters = max(16, int(np.sqrt(n_rows)))
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((self.n_clusters, dim), dtype=np.float32)
        self.dim, self.seed, self.spread = dim, seed, spread

    def rows(self, start: int, stop: int, stream: int = 0) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, start])
        c = rng.integers(0, self.n_clusters, stop - start)
        x = rng.standard_normal((stop - start, self.dim), dtype=np.float32)
        x *= self.spread
        x += self.centers[c]
        return x


def pct(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def time_queries(fn, queries: np.ndarray, warmup: int) -> tuple[list[float], list[np.ndarray]]:
    for q in queries[:warmup]:
        fn(q)
    ms, out = [], []
    for q in queries[warmup:]:
        t = time.perf_counter()
        out.append(fn(q))
        ms.append((time.perf_counter() - t) * 1000)
    return ms, out


def run_size(n: int, args: argparse.Namespace, work: Path) -> list[dict]:
    gen = Clusters(n, args.dim, args.seed, args.spread)
    path = work / f"store-{n}-{args.dim}"
    ident = {"model_fingerprint": "synthetic", "data_fingerprint": f"clusters-{n}-{args.dim}-{args.seed}-{args.spread}"}
    t = time.perf_counter()
    info = build_store(path, n_rows=n, row_ids=[str(i) for i in range(n)], identity=ident,
                       featurize=gen.rows, dim=args.dim, shard_size=args.shard_size, progress=True)
    build_s = time.perf_counter() - t
    store = open_store(path)
    nq = args.warmup + args.queries
    timed = gen.rows(0, nq, stream=1)
    tune = gen.rows(0, args.tune_queries, stream=2)
    common = {"n_rows": n, "dim": args.dim, "metric": args.metric, "k": K, "n_queries": args.queries}

    ms, exact = time_queries(lambda q: exact_topk(store, q, K, metric=args.metric)[1][0], timed, args.warmup)
    exact_idx = np.stack(exact)
    p50, p95 = pct(ms)
    rows = [{**common, "method": "exact-stream-cpu", "p50_ms": p50, "p95_ms": p95, "recall_at_10": 1.0,
             "build_s": build_s, "build_note": "synthetic generation + fp16 shards + hashes"
             + (" (reused store)" if info.rows_computed == 0 else ""), "store_bytes": info.nbytes}]
    print(f"  exact  n={n}: p50 {p50:.2f} ms  p95 {p95:.2f} ms", flush=True)

    t = time.perf_counter()
    index = build_faiss_index(store, "ivf", metric=args.metric, nlist=args.nlist, recall_queries=tune,
                              target_recall=args.target_recall, seed=args.seed)
    tune_recall = index.info["recall_at_10"]
    recall = recall_at_k_vs_exact(index, store, timed[args.warmup:], K, exact=exact_idx)
    while recall < args.target_recall and index.nprobe < index.index.nlist:  # must hold on timed queries too
        index.nprobe = min(index.nprobe * 2, index.index.nlist)
        recall = recall_at_k_vs_exact(index, store, timed[args.warmup:], K, exact=exact_idx)
    print(f"  ivf    n={n}: nlist {index.index.nlist} nprobe {index.nprobe} recall@10 {recall:.3f} "
          f"(tune set {tune_recall:.3f}), build {index.info['build_s']:.1f} s, "
          f"with tuning {time.perf_counter() - t:.1f} s", flush=True)
    ms, _ = time_queries(lambda q: index.search(q, K)[1][0], timed, args.warmup)
    p50, p95 = pct(ms)
    rows.append({**common, "method": "faiss-ivf-flat", "p50_ms": p50, "p95_ms": p95, "recall_at_10": recall,
                 "build_s": index.info["build_s"], "build_note": "k-means train + add (fp32 copy of every row)",
                 "nlist": int(index.index.nlist), "nprobe": int(index.nprobe),
                 "train_rows": index.info["train_rows"], "tune_recall_at_10": tune_recall})
    print(f"  ivf    n={n}: p50 {p50:.2f} ms  p95 {p95:.2f} ms", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| rows | dim | method | p50 ms | p95 ms | recall@10 | build s | nlist/nprobe |", "|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        probe = f"{r['nlist']}/{r['nprobe']}" if "nlist" in r else ""
        out.append(f"| {r['n_rows']:,} | {r['dim']} | {r['method']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                   f"{r['recall_at_10']:.3f} | {r['build_s']:.1f} | {probe} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--metric", choices=["dot", "cosine"], default="cosine", help="grad_cosine is the default method")
    ap.add_argument("--queries", type=int, default=60, help="timed single queries per method and size")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--tune-queries", type=int, default=100)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--nlist", type=int, default=None, help="default ~4*sqrt(N)")
    ap.add_argument("--spread", type=float, default=1.0, help="within-cluster noise / center scale")
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", type=Path, default=None, help="where stores go (kept); default a temp dir (deleted)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="datablame-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        for n in args.sizes:
            print(f"N = {n:,} x {args.dim}", flush=True)
            rows += run_size(n, args, work)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "query latency, top-10 for one query (BENCHMARKS.md: Speed and memory)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg(),
                    "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "setup": {"data": "clustered Gaussian, sqrt(N) clusters, fp16 store", "metric": args.metric,
                  "spread": args.spread, "queries": args.queries, "warmup": args.warmup,
                  "tune_queries": args.tune_queries, "target_recall": args.target_recall,
                  "cache": "store in page cache (warm), latency excludes opening the store",
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                  "total_s": time.perf_counter() - t0},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
