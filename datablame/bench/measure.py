"""Wall time and peak memory of one call, measured the same way for our methods and peers.

Memory on CPU is the process RSS sampled every ~1 ms in a thread while the call runs,
minus the RSS just before it (after `malloc_trim`, so memory freed by earlier calls is
returned first): "peak RSS above baseline". torch allocations are invisible to
tracemalloc, hence RSS. On CUDA the figure is the increase of
`torch.cuda.max_memory_allocated` over what was allocated before the call. The method is
benchmarks/_common.py's `peak_bytes`, here as a library function so `datablame bench`
measures every method and peer in the same process alike.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Measured:
    value: Any
    seconds: float
    peak_bytes: int | None  # None where RSS cannot be read


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: RSS peaks are then allocator high-water marks
        return None


def _rss_reader() -> Callable[[], int] | None:
    try:
        import psutil

        proc = psutil.Process()
        return lambda: proc.memory_info().rss
    except ImportError:
        pass
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def statm() -> int:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * page

        return statm
    return None


def measure(fn: Callable[[], Any], device: torch.device | str = "cpu", interval: float = 0.001) -> Measured:
    """Run fn() once; its result, wall seconds and peak memory above the baseline."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        value = fn()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        return Measured(value, seconds, int(torch.cuda.max_memory_allocated(device) - base))
    rss = _rss_reader()
    if rss is None:
        t0 = time.perf_counter()
        value = fn()
        return Measured(value, time.perf_counter() - t0, None)
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    base = rss()
    high = [base]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            high[0] = max(high[0], rss())
            time.sleep(interval)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - t0
        stop.set()
        th.join()
    high[0] = max(high[0], rss())
    return Measured(value, seconds, int(high[0] - base))
