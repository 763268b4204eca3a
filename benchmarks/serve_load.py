"""Load on a live `datablame serve` over a small planted run: 8 concurrent clients for a
bounded time, a mix of repeated queries (cache hits after their first answer) and new ones
(misses: the worker computes them). Reports requests/s, p50/p95/p99 latency for hits and
misses, errors, 503s, the server's peak RSS and the cache hit ratio.

    nice -n 10 .venv/bin/python benchmarks/serve_load.py [--seconds 40] [--clients 8]
    -> benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "serve")]

from serve_helpers import Server, copy_run, train_run  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "serve_load.json"
ENTITIES = ["Daldor", "Brimont", "Calheim", "Morheim", "Zorblax", "Quenmar"]


def percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "p50": None, "p95": None, "p99": None}
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 2)

    return {"n": len(s), "p50": q(0.50), "p95": q(0.95), "p99": q(0.99)}


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--new-ratio", type=float, default=0.15, help="share of requests that are new queries")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        cfg = copy_run(train_run(tmp / "trained"), tmp / "served", auth=False, rate_limit_per_minute=100_000,
                       queue_size=64, sync_wait_s=2.0)
        setup_s = time.perf_counter() - t
        server = Server(cfg, tmp / "server.log").start()
        results: list[tuple[str, float, int]] = []  # (hit|miss|error|rejected, seconds, status)
        lock = threading.Lock()
        counter = iter(range(10**9))
        stop_at = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop_at:
                if rng.random() < args.new_ratio:
                    n = next(counter)
                    prompt = f"Question: What does {rng.choice(ENTITIES)} trade number {n}?\nAnswer:"
                else:
                    prompt = f"Question: What is the main export of {rng.choice(ENTITIES)}?\nAnswer:"
                body = {"prompt": prompt, "completion": " salt.", "k": 5, "methods": ["grad_cosine", "bm25"]}
                t0 = time.perf_counter()
                try:
                    status, job = server.json("POST", "/v1/attributions", body)
                    if status == 503:
                        kind = "rejected"
                        time.sleep(0.2)
                    elif status not in (200, 202):
                        kind = "error"
                    else:
                        if job["state"] != "done":
                            job = server.wait_job(job["id"])
                            if job["state"] == "done":
                                status = server.get(f"/v1/attributions/{job['id']}")[0]
                        kind = ("hit" if job["cached"] else "miss") if job["state"] == "done" and status == 200 \
                            else "error"
                except Exception:  # noqa: BLE001 - counted
                    kind, status = "error", -1
                with lock:
                    results.append((kind, time.perf_counter() - t0, status))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        rss = peak_rss_mb(server.proc.pid)
        metrics = server.get("/metrics")[2].decode()
        server.stop()
    by = {k: [s for kind, s, _ in results if kind == k] for k in ("hit", "miss", "error", "rejected")}
    answered = len(by["hit"]) + len(by["miss"])
    report = {
        "seconds": round(wall, 1), "clients": args.clients, "new_query_ratio": args.new_ratio,
        "requests": len(results), "answered": answered, "requests_per_s": round(len(results) / wall, 2),
        "answers_per_s": round(answered / wall, 2),
        "latency_ms": {"hit": percentiles(by["hit"]), "miss": percentiles(by["miss"])},
        "errors": len(by["error"]), "rejected_503": len(by["rejected"]),
        "cache_hit_ratio": round(len(by["hit"]) / answered, 3) if answered else None,
        "server_peak_rss_mb": rss, "setup_s": round(setup_s, 1),
        "run": "small planted run (55 rows, 2-layer tiny Llama) with its feature store; methods grad_cosine + bm25, k=5",
        "queue_length_at_end": next((line.split()[-1] for line in metrics.splitlines()
                                     if line.startswith("datablame_queue_length ")), None),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
