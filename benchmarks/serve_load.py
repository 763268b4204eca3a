"""Load on a live `datablame serve` over a small planted run: 8 concurrent clients for a
bounded time, a mix of repeated queries (cache hits after their first answer) and new ones
(misses: the worker computes them). Reports requests/s, p50/p95/p99 latency for hits and
misses, errors, 503s, the cache hit ratio, and the server's resident memory sampled every
second (peak up to 30 s, 60 s, ... and its growth; a plot next to the JSON), plus the size of
its job table and cache on disk.

    nice -n 10 .venv/bin/python benchmarks/serve_load.py [--duration 120] [--clients 8]
    -> benchmarks/results/serve_load.json, serve_load_rss.png

The machine's 2 CPU cores are shared (the client threads, the server and other work): the
latencies and rates are upper bounds for this machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
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
MARKS = (30, 60, 120, 300, 600)  # seconds: peak RSS up to each mark within the run
ENTITIES = ["Daldor", "Brimont", "Calheim", "Morheim", "Zorblax", "Quenmar"]


def percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "p50": None, "p95": None, "p99": None}
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 2)

    return {"n": len(s), "p50": q(0.50), "p95": q(0.95), "p99": q(0.99)}


def _status_mb(pid: int, field: str) -> float | None:
    """A memory line of /proc/<pid>/status (VmRSS: now, VmHWM: the peak) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    return _status_mb(pid, "VmHWM")


class RssSampler(threading.Thread):
    """The server's resident memory (VmRSS) once a second while the load runs."""

    def __init__(self, pid: int, t0: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.t0, self.samples = pid, t0, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            mb = _status_mb(self.pid, "VmRSS")
            if mb is not None:
                self.samples.append((round(time.perf_counter() - self.t0, 2), mb))
            self.done.wait(1.0)

    def summary(self, wall: float) -> dict:
        xs = self.samples
        peak_by = {f"{m}s": max((mb for t, mb in xs if t <= m), default=None) for m in MARKS if m <= wall + 1}
        first = [mb for t, mb in xs if t <= 30]
        last = [mb for t, mb in xs if t >= wall - 30]
        return {
            "samples": len(xs), "every_s": 1.0, "peak_up_to": peak_by,
            "peak_mb": max((mb for _, mb in xs), default=None),
            "mean_first_30s_mb": round(sum(first) / len(first), 1) if first else None,
            "mean_last_30s_mb": round(sum(last) / len(last), 1) if last else None,
            "growth_first_to_last_30s_mb": round(sum(last) / len(last) - sum(first) / len(first), 1)
            if first and last else None,
            "series": [[t, mb] for t, mb in xs],
        }


def dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 2)


def plot_rss(rss: dict, path: Path, clients: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, mb = zip(*rss["series"], strict=True) if rss["series"] else ((), ())
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(t, mb, lw=1.2)
    ax.set_xlabel("seconds into the load")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title(f"datablame serve under {clients} clients: resident memory once a second")
    ax.set_ylim(0, max(mb, default=1) * 1.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", "--seconds", dest="seconds", type=float, default=120,
                    help="seconds of load (default 120)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--new-ratio", type=float, default=0.15, help="share of requests that are new queries")
    ap.add_argument("--out", type=Path, default=OUT, help="the JSON (the plot goes next to it)")
    args = ap.parse_args()
    out, plot = args.out, args.out.with_name(args.out.stem + "_rss.png")
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
        load_start = list(os.getloadavg())
        sampler = RssSampler(server.proc.pid, t0)
        sampler.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
        load_end = list(os.getloadavg())
        rss = peak_rss_mb(server.proc.pid)
        metrics = server.get("/metrics")[2].decode()
        health = server.json("GET", "/healthz")[1]
        server.stop()
        serve_dir = dir_mb(tmp / "served" / "run" / "serve")
    by = {k: [s for kind, s, _ in results if kind == k] for k in ("hit", "miss", "error", "rejected")}
    answered = len(by["hit"]) + len(by["miss"])
    report = {
        "seconds": round(wall, 1), "clients": args.clients, "new_query_ratio": args.new_ratio,
        "requests": len(results), "answered": answered, "requests_per_s": round(len(results) / wall, 2),
        "answers_per_s": round(answered / wall, 2),
        "latency_ms": {"hit": percentiles(by["hit"]), "miss": percentiles(by["miss"])},
        "errors": len(by["error"]), "rejected_503": len(by["rejected"]),
        "cache_hit_ratio": round(len(by["hit"]) / answered, 3) if answered else None,
        "server_peak_rss_mb": rss, "server_rss": sampler.summary(wall),
        "serve_dir_mb_at_end": serve_dir, "setup_s": round(setup_s, 1),
        "run": "small planted run (55 rows, 2-layer tiny Llama) with its feature store; methods grad_cosine + bm25, k=5",
        "queue_length_at_end": next((line.split()[-1] for line in metrics.splitlines()
                                     if line.startswith("datablame_queue_length ")), None),
        "server_reloads": health.get("reloads"),
        "machine": {"cpu_count": os.cpu_count(), "loadavg_at_start": load_start, "loadavg_at_end": load_end,
                    "note": "2 CPU cores shared by the 8 client threads, the server and other work: "
                            "latencies and rates are upper bounds for this machine"},
        "plot": plot.name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_rss(report["server_rss"], plot, args.clients)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    tmp_out.replace(out)
    print(json.dumps({k: v for k, v in report.items() if k != "server_rss"}, indent=2))
    print(json.dumps({k: v for k, v in report["server_rss"].items() if k != "series"}, indent=2))


if __name__ == "__main__":
    main()
