"""Scale figures (issue 21, item 6): one-query top-10 latency and recall@10 at 10^6 and 10^7
synthetic rows for exact streaming vs FAISS IVF-Flat vs FAISS IVF-PQ, plus store and index bytes.

Clustered Gaussian rows (benchmarks/query.py's generator) are written as a real fp16 store with
`build_store` (reused from --work-dir on rerun). Per size and path: p50/p95 single-query time
and recall@10 against exact streaming, both for the index alone and for the index's
`--candidates` rows re-scored exactly from the store (what `attribution.store.search: ann`
runs: `datablame.features.ann.ann_only`). Store bytes per row are measured on disk (shards +
norms + manifest), index bytes from the written FAISS file. 10^7 rows use a modest dim (64 by
default; 10^7 x 256 fp16 would be 5 GB of store and a 10 GB fp32 IVF-Flat index on a 23 GB
machine). Wall times are upper bounds: the 2 cores are shared (loadavg recorded).

    nice -n 10 .venv/bin/python benchmarks/ann_scale.py --sizes 1000000:256 10000000:64
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/query.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from query import Clusters  # noqa: E402

from datablame.features.ann import SearchPlan, ann_only  # noqa: E402
from datablame.store import build_faiss_index, build_store, open_store  # noqa: E402
from datablame.store.faiss_index import recall_at_k_vs_exact  # noqa: E402
from datablame.store.rows import StoreRows, dot_scores  # noqa: E402

RESULTS = HERE / "results" / "ann_scale.json"
K = 10


def _pct(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _recall(top: list[np.ndarray], exact: np.ndarray) -> float:
    return float(np.mean([len(set(t.tolist()) & set(e.tolist())) / K for t, e in zip(top, exact, strict=True)]))


def _timed(fn, queries: torch.Tensor, warmup: int) -> tuple[list[float], list[np.ndarray]]:
    ms, top = [], []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        idx = fn(queries[i : i + 1])
        if i >= warmup:
            ms.append((time.perf_counter() - t0) * 1000)
            top.append(idx)
    return ms, top


def _tune_rescored(index, rows: StoreRows, tune: np.ndarray, a: argparse.Namespace, store) -> int:
    """Smallest nprobe (from the IVF-Flat's, doubling, at most 64) whose `candidates` rows,
    re-scored exactly, hold `target_recall` of the exact top-10 of the tuning queries."""
    from datablame.store.search import exact_topk

    _, exact = exact_topk(store, tune, K, metric="cosine")
    plan = SearchPlan("ann", "tuning", index)
    q = torch.from_numpy(tune)
    nprobe = index.nprobe
    while True:
        got = ann_only(plan, q, rows, normalize=True, candidates=a.candidates, nprobe=nprobe)[0]
        top = [np.argsort(-g, kind="stable")[:K] for g in got]
        if _recall(top, exact) >= a.target_recall or nprobe >= min(64, index.index.nlist):
            return nprobe
        nprobe *= 2


def run_size(n: int, dim: int, a: argparse.Namespace, work: Path) -> dict:
    print(f"N = {n:,} x {dim}", flush=True)
    gen = Clusters(n, dim, a.seed, a.spread)
    path = work / f"store-{n}-{dim}"
    t = time.perf_counter()
    info = build_store(path, n_rows=n, row_ids=[str(i) for i in range(n)],
                       identity={"model_fingerprint": "synthetic", "data_fingerprint": f"{n}-{dim}-{a.seed}"},
                       featurize=gen.rows, dim=dim, shard_size=a.shard_size, progress=False)
    build_s = time.perf_counter() - t
    store = open_store(info.path)
    rows = StoreRows(store)
    disk = _dir_bytes(path)
    out: dict = {"rows": n, "dim": dim, "store": {"bytes_on_disk": disk, "bytes_per_row": disk / n,
                                                  "fp16_payload_bytes_per_row": 2 * dim, "build_s": build_s}}
    queries = torch.from_numpy(gen.rows(0, a.warmup + a.queries, stream=1))
    qnp = queries.numpy()[a.warmup:]

    ms, exact_top = _timed(lambda q: np.argsort(-dot_scores(q, rows, normalize=True)[0], kind="stable")[:K], queries, a.warmup)
    exact = np.stack(exact_top)
    out["exact"] = {**_pct(ms), "recall_at_10": 1.0, "what": "dot_scores over every stored row (search: exact)"}
    print(f"  exact: p50 {out['exact']['p50_ms']:.1f} ms", flush=True)

    tune = gen.rows(0, a.tune_queries, stream=2)
    nlist = a.nlist or None
    ivf_nprobe = None
    for kind in ("ivf", "ivfpq"):
        t = time.perf_counter()
        # IVF-PQ's codes cap its own recall below the target, so tuning would raise nprobe to nlist
        # (a scan of every code): it probes as many lists as the tuned IVF-Flat, the exact
        # re-scoring of its candidates recovers the recall
        index = build_faiss_index(store, kind, metric="cosine", nlist=nlist, recall_queries=tune,
                                  target_recall=a.target_recall, seed=a.seed, nprobe=ivf_nprobe,
                                  train_sample=(40 * nlist) if nlist else None)
        ivf_nprobe = ivf_nprobe or index.nprobe
        if kind == "ivfpq":  # raise nprobe until the re-scored candidates reach the target on the tuning queries
            index.nprobe = _tune_rescored(index, rows, tune, a, store)
        total_build = time.perf_counter() - t
        f = work / f"index-{n}-{dim}-{kind}.faiss"
        index.save(f)
        index_bytes = f.stat().st_size
        f.unlink()
        ms_idx, top_idx = _timed(lambda q, index=index: index.search(q.numpy(), K)[1][0], queries, a.warmup)
        plan = SearchPlan("ann", "benchmark", index)
        ms_rs, top_rs = _timed(
            lambda q, plan=plan: np.argsort(-ann_only(plan, q, rows, normalize=True, candidates=a.candidates,
                                                      nprobe=None)[0][0], kind="stable")[:K], queries, a.warmup)
        out[kind] = {
            "index_only": {**_pct(ms_idx), "recall_at_10": _recall(top_idx, exact)},
            "rescored": {**_pct(ms_rs), "recall_at_10": _recall(top_rs, exact), "candidates": a.candidates},
            "nlist": int(index.index.nlist), "nprobe": index.nprobe, "m_pq": index.info.get("m_pq"),
            "nbits": index.info.get("nbits"), "train_rows": index.info.get("train_rows"),
            "tune_recall_at_10": index.info.get("recall_at_10"),
            "check_recall_at_10": recall_at_k_vs_exact(index, store, qnp, K, exact=exact),
            "index_bytes": index_bytes, "index_bytes_per_row": index_bytes / n,
            "build_s": index.info["build_s"], "build_and_tune_s": total_build,
        }
        r = out[kind]
        print(f"  {kind}: nlist {r['nlist']} nprobe {r['nprobe']} index p50 {r['index_only']['p50_ms']:.2f} ms "
              f"recall {r['index_only']['recall_at_10']:.3f}; rescored p50 {r['rescored']['p50_ms']:.2f} ms "
              f"recall {r['rescored']['recall_at_10']:.3f}; {index_bytes / n:.1f} B/row; build {total_build:.0f} s",
              flush=True)
        del index, plan
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1000000:256", "10000000:64"], help="ROWS:DIM pairs")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tune-queries", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--nlist", type=int, default=0, help="0: ~4*sqrt(N) (capped at 4096 from 10^7 rows up)")
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--shard-size", type=int, default=65536)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", type=Path, default=None, help="kept when given (stores reused on rerun)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--merge", action="store_true", help="keep the other sizes already in --out")
    a = ap.parse_args(argv)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="ann_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    res = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "loadavg_before": os.getloadavg()},
           "note": "wall times are upper bounds: 2 shared CPU cores (other jobs ran at the same time)",
           "setup": {"data": f"clustered Gaussian rows (sqrt(N) clusters, spread {a.spread:.2f}), fp16 store",
                     "metric": "cosine (grad_cosine)", "k": K, "queries": a.queries, "warmup": a.warmup,
                     "candidates": a.candidates, "target_recall": a.target_recall},
           "sizes": []}
    if a.merge and a.out.is_file():  # keep the sizes measured earlier that this run does not redo
        redo = {tuple(int(x) for x in spec.split(":")) for spec in a.sizes}
        res["sizes"] = [s for s in json.loads(a.out.read_text())["sizes"] if (s["rows"], s["dim"]) not in redo]
    t0 = time.perf_counter()
    try:
        for spec in a.sizes:
            n, dim = (int(x) for x in spec.split(":"))
            if not a.nlist and n >= 10_000_000:
                a.nlist = 4096  # k-means over 4*sqrt(1e7) = 12,649 lists costs ~10 min on 2 cores
                res["sizes"].append(run_size(n, dim, a, work))
                a.nlist = 0
            else:
                res["sizes"].append(run_size(n, dim, a, work))
            res["sizes"].sort(key=lambda s: (s["rows"], s["dim"]))
            res["total_s"] = time.perf_counter() - t0
            res["machine"]["loadavg_after"] = os.getloadavg()
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(res, indent=2) + "\n")
    finally:
        if a.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {a.out} in {time.perf_counter() - t0:.0f} s")
    return res


if __name__ == "__main__":
    main()
