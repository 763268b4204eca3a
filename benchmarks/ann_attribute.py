"""`attribute`'s two store paths for grad_cosine on a synthetic store: exact streaming
(`dot_scores` over every row, what `attribution.store.search: exact` runs) vs ANN (a FAISS IVF
index proposes `--candidates` rows per query, re-scored exactly: `datablame.features.ann`).

Clustered Gaussian rows (benchmarks/query.py's generator) are written as a real fp16 store with
`build_store` (reused from --work-dir on rerun). Reports p50/p95 single-query time of each path
and the ANN path's recall@10 against exact, to benchmarks/results/ann_attribute.json.

    nice -n 10 .venv/bin/python benchmarks/ann_attribute.py                 # 1e5 rows
    nice -n 10 .venv/bin/python benchmarks/ann_attribute.py --rows 1000000  # 1e6 rows
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
from datablame.store.rows import StoreRows, dot_scores  # noqa: E402

RESULTS = HERE / "results" / "ann_attribute.json"
K = 10


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--target-recall", type=float, default=0.95, help="nprobe is tuned up to this index recall@10")
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--shard-size", type=int, default=16384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="ann_attribute-"))
    gen = Clusters(a.rows, a.dim, a.seed, a.spread)
    t = time.perf_counter()
    info = build_store(work / f"store-{a.rows}-{a.dim}", n_rows=a.rows, row_ids=[str(i) for i in range(a.rows)],
                       identity={"model_fingerprint": "synthetic", "data_fingerprint": f"{a.rows}-{a.dim}-{a.seed}"},
                       featurize=gen.rows, dim=a.dim, shard_size=a.shard_size, progress=True)
    build_s = time.perf_counter() - t
    store = open_store(info.path)
    rows = StoreRows(store)
    t = time.perf_counter()
    index = build_faiss_index(store, "ivf", metric="cosine", recall_queries=gen.rows(0, 50, stream=2),
                              target_recall=a.target_recall, seed=a.seed)
    index_s = time.perf_counter() - t
    plan = SearchPlan("ann", "benchmark", index)
    queries = torch.from_numpy(gen.rows(0, a.warmup + a.queries, stream=1))

    def timed(fn) -> tuple[list[float], list[np.ndarray]]:
        ms, out = [], []
        for i in range(len(queries)):
            t0 = time.perf_counter()
            s = fn(queries[i : i + 1])
            if i >= a.warmup:
                ms.append((time.perf_counter() - t0) * 1000)
                out.append(np.argsort(-s[0], kind="stable")[:K])
        return ms, out

    exact_ms, exact_top = timed(lambda q: dot_scores(q, rows, normalize=True))
    ann_ms, ann_top = timed(lambda q: ann_only(plan, q, rows, normalize=True, candidates=a.candidates, nprobe=None)[0])
    recall = float(np.mean([len(set(x.tolist()) & set(e.tolist())) / K for x, e in zip(ann_top, exact_top, strict=True)]))
    res = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "rows": a.rows, "dim": a.dim, "queries": a.queries, "metric": "cosine (grad_cosine)", "k": K,
        "exact": {"p50_ms": float(np.percentile(exact_ms, 50)), "p95_ms": float(np.percentile(exact_ms, 95)),
                  "what": "dot_scores over every stored row (attribution.store.search: exact)"},
        "ann": {"p50_ms": float(np.percentile(ann_ms, 50)), "p95_ms": float(np.percentile(ann_ms, 95)),
                f"recall_at_{K}_vs_exact": recall, "candidates": a.candidates, "kind": index.kind,
                "nlist": int(index.index.nlist), "nprobe": index.nprobe,
                "index_recall_at_10": index.info.get("recall_at_10"),
                "what": "IVF candidates re-scored exactly (attribution.store.search: ann)"},
        "store_build_s": build_s, "index_build_s": index_s,
    }
    res["speedup_p50"] = res["exact"]["p50_ms"] / res["ann"]["p50_ms"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("rows", "exact", "ann", "speedup_p50")}, indent=2))
    return res


if __name__ == "__main__":
    main()
