"""Time estimates for long stages (training-row gradients, retraining sweeps).

`EtaLog` logs once, after the first few batches or jobs, the measured seconds per unit and
what that means for the rest of the stage:

    training-row gradients: 0.012 s per row over the first 16 of 5,000 rows; 4,984 left:
    about 1 min more (about 1 min in all)

The progress bars show a running ETA too (tqdm with a known total); this line is for logs and
for stages whose bar is hidden.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("datablame")
MIN_TOTAL_S = 10.0  # stages estimated shorter than this are not announced


def fmt_seconds(s: float) -> str:
    """A duration as people say it: 0.4 s, 42 s, 3 min 10 s, 2 h 05 min."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec:02d} s"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


class EtaLog:
    """Logs one estimate for a stage of `total` units once `after` units are done.

    `min_total_s`: stay quiet when the whole stage is estimated to take less (default
    MIN_TOTAL_S: short stages need no warning). `clock` is injectable for tests.
    """

    def __init__(self, what: str, total: int, unit: str = "row", *, after: int = 1, min_total_s: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.after, self.clock = max(1, after), clock
        self.min_total_s = MIN_TOTAL_S if min_total_s is None else min_total_s
        self.start = clock()
        self.logged: str | None = None

    def update(self, done: int) -> str | None:
        """`done` units are finished; returns the line when it is logged (once)."""
        if self.logged is not None or done < self.after or done >= self.total or done <= 0:
            return None
        elapsed = self.clock() - self.start
        per = elapsed / done
        left = self.total - done
        estimate = elapsed + per * left
        self.logged = ""  # measured once, logged or not
        if estimate < self.min_total_s:
            return None
        units = self.unit + ("s" if self.total != 1 else "")
        self.logged = (f"{self.what}: {fmt_seconds(per) if per >= 0.1 else f'{per:.3g} s'} per {self.unit} over the "
                       f"first {done:,} of {self.total:,} {units}; {left:,} left: about {fmt_seconds(per * left)} more "
                       f"(about {fmt_seconds(estimate)} in all)")
        log.info(self.logged)
        return self.logged
