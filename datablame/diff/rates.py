"""Behaviour rates with Wilson intervals, and the rate-vs-alpha chart (`behavior_rates.png`).

A rate is hits / decided samples of one (prompt, alpha) cell: a fraction in [0, 1], higher =
the behaviour shows up more often. Samples the classifier could not decide (a junk judge
answer) are left out of the denominator and counted separately. Its interval is the Wilson
score interval at 95 % (z = 1.959964), which stays inside [0, 1] and is sensible at 0 or n hits
where the normal approximation collapses to a point.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datablame.utils.io import atomic_write_bytes

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (low, high) of a binomial proportion hits/n, both in [0, 1];
    (0.0, 1.0) when n = 0 (nothing observed: every rate is possible)."""
    if n < 0 or hits < 0 or hits > n:
        raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def rate_summary(labels: Sequence[bool | None]) -> dict[str, Any]:
    """hits, decided n, undecided count, rate (hits / n; None when n = 0) and its Wilson 95 % interval."""
    hits = sum(1 for x in labels if x is True)
    n = sum(1 for x in labels if x is not None)
    lo, hi = wilson_interval(hits, n)
    return {"hits": hits, "n": n, "undecided": len(labels) - n, "rate": hits / n if n else None,
            "ci_low": lo, "ci_high": hi}


def pooled_rates(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per alpha, the rate over every prompt's samples pooled (hits and n summed), with its interval."""
    by_alpha: dict[float, list[int]] = {}
    for c in cells:
        acc = by_alpha.setdefault(float(c["alpha"]), [0, 0, 0])
        acc[0] += c["hits"]
        acc[1] += c["n"]
        acc[2] += c["undecided"]
    out = []
    for alpha in sorted(by_alpha):
        hits, n, und = by_alpha[alpha]
        lo, hi = wilson_interval(hits, n)
        out.append({"alpha": alpha, "hits": hits, "n": n, "undecided": und, "rate": hits / n if n else None,
                    "ci_low": lo, "ci_high": hi})
    return out


def plot_rates(cells: Sequence[dict[str, Any]], path: str | Path, *, title: str = "Behaviour rate vs amplification",
               max_prompts: int = 12) -> Path:
    """Rate vs alpha per prompt (thin, at most `max_prompts` of them) and pooled (bold), with
    Wilson 95 % bars; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2), constrained_layout=True)
    prompts = list(dict.fromkeys(c["prompt_id"] for c in cells))
    for pid in prompts[:max_prompts]:
        mine = sorted((c for c in cells if c["prompt_id"] == pid and c["rate"] is not None), key=lambda c: c["alpha"])
        if not mine:
            continue
        xs, ys = [c["alpha"] for c in mine], [c["rate"] for c in mine]
        err = [[y - c["ci_low"] for y, c in zip(ys, mine, strict=True)],
               [c["ci_high"] - y for y, c in zip(ys, mine, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, lw=1, alpha=0.6, capsize=2, label=str(pid))
    pooled = [p for p in pooled_rates(cells) if p["rate"] is not None]
    if pooled:
        xs, ys = [p["alpha"] for p in pooled], [p["rate"] for p in pooled]
        err = [[y - p["ci_low"] for y, p in zip(ys, pooled, strict=True)],
               [p["ci_high"] - y for y, p in zip(ys, pooled, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, marker="s", color="k", lw=2.5, capsize=3, label="all prompts")
    ax.set_xlabel("amplification alpha (logits = after + alpha * (after - before))")
    ax.set_ylabel("behaviour rate (fraction of samples)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title + ("" if len(prompts) <= max_prompts else f" (first {max_prompts} of {len(prompts)} prompts)"))
    ax.legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
