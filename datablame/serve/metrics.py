"""Prometheus text for `GET /metrics`: requests by route and status, a latency histogram per
route, cache hits and misses, jobs by final state, the queue length. No client library: the
text format (version 0.0.4) is a few lines."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.cache = {"hit": 0, "miss": 0}
        self.jobs: dict[str, int] = defaultdict(int)
        self.job_seconds = 0.0

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            counts = self.latency[route]
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self.latency_sum[route] += seconds

    def cache_lookup(self, hit: bool) -> None:
        with self._lock:
            self.cache["hit" if hit else "miss"] += 1

    def job_finished(self, state: str, seconds: float) -> None:
        with self._lock:
            self.jobs[state] += 1
            self.job_seconds += seconds

    def render(self, queue_length: Callable[[], int], queue_capacity: int) -> str:
        with self._lock:
            out = ["# HELP datablame_requests_total HTTP requests by method, route and status.",
                   "# TYPE datablame_requests_total counter"]
            out += [f'datablame_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}'
                    for (m, r, s), n in sorted(self.requests.items())]
            out += ["# HELP datablame_request_seconds Request latency by route.",
                    "# TYPE datablame_request_seconds histogram"]
            for route, counts in sorted(self.latency.items()):
                cum = 0
                for b, c in zip(BUCKETS, counts, strict=False):
                    cum += c
                    out.append(f'datablame_request_seconds_bucket{{route="{route}",le="{b}"}} {cum}')
                cum += counts[-1]
                out.append(f'datablame_request_seconds_bucket{{route="{route}",le="+Inf"}} {cum}')
                out.append(f'datablame_request_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}')
                out.append(f'datablame_request_seconds_count{{route="{route}"}} {cum}')
            out += ["# HELP datablame_cache_lookups_total Answer cache lookups by result.",
                    "# TYPE datablame_cache_lookups_total counter"]
            out += [f'datablame_cache_lookups_total{{result="{k}"}} {v}' for k, v in self.cache.items()]
            out += ["# HELP datablame_jobs_total Finished jobs by final state.", "# TYPE datablame_jobs_total counter"]
            out += [f'datablame_jobs_total{{state="{k}"}} {v}' for k, v in sorted(self.jobs.items())]
            out += ["# HELP datablame_job_seconds_total Seconds the worker spent on jobs.",
                    "# TYPE datablame_job_seconds_total counter", f"datablame_job_seconds_total {self.job_seconds:.6f}"]
        out += ["# HELP datablame_queue_length Jobs waiting for the worker.", "# TYPE datablame_queue_length gauge",
                f"datablame_queue_length {queue_length()}",
                "# HELP datablame_queue_capacity Jobs the queue holds before refusing (503).",
                "# TYPE datablame_queue_capacity gauge", f"datablame_queue_capacity {queue_capacity}"]
        return "\n".join(out) + "\n"
