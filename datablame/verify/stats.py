"""Statistics of counterfactual retraining: effect against the control, intervals, verdicts.

The removal effect for one query and one k, with training seeds s = 1..S:

    effect_s = loss(top-k removed, s) - mean_d loss(k random rows removed, draw d, s)

i.e. how much more the query's completion loss (nats/token) rose when the method's rows were
removed than when the same number of random rows were removed, with the same seed (so the
same initial weights and data-order seed) on both sides. Positive = the method's rows
taught the completion more than random rows did. The reported effect is the mean over seeds,
with a Student-t confidence interval and a two-sided one-sample t-test p-value (H0: the
method's rows matter no more than random ones); with one seed there is no interval. The
baseline (nothing removed) is reported alongside so that both effects can be read as rises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

VERDICTS = ("confirmed", "partial", "not influential")


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def t_interval(x: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval; the interval is (nan, nan) below two values."""
    from scipy import stats

    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    n = len(a)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(a.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    sem = float(a.std(ddof=1) / np.sqrt(n))
    if sem == 0.0:
        return Interval(mean, mean, mean, n)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return Interval(mean, mean - half, mean + half, n)


def t_test_p(x: Sequence[float]) -> float:
    """Two-sided one-sample t-test of mean 0 (nan below two values; 0 or 1 if no spread)."""
    from scipy import stats

    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    if len(a) < 2:
        return float("nan")
    if np.all(a == a[0]):
        return 1.0 if a[0] == 0 else 0.0
    return float(stats.ttest_1samp(a, 0.0).pvalue)


def bootstrap_mean(
    x: Sequence[float], *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Interval:
    """Mean with a percentile bootstrap interval (resampling the values with replacement)."""
    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    n = len(a)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if n == 1:
        return Interval(float(a[0]), float("nan"), float("nan"), 1)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(a.mean()), float(lo), float(hi), n)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import rankdata

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass
class RemovalEffect:
    """Top-k removal against the control, for one query (or the mean over queries)."""

    effect: Interval  # mean over seeds of effect_s (nats/token), with its CI
    p_value: float
    baseline_loss: float  # mean over seeds, nothing removed
    top_rise: float  # mean loss rise over the baseline when the top-k rows are removed
    control_rise: float  # mean loss rise when k random rows are removed
    control_sd: float  # spread of the control rises (over seeds and draws)
    standardized: float  # effect / control_sd: how many control spreads beyond random

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effect"] = self.effect.to_dict()
        return d


def removal_effect(
    top: np.ndarray, controls: np.ndarray, baseline: np.ndarray, confidence: float = 0.95
) -> RemovalEffect:
    """`top` [S], `controls` [S, D], `baseline` [S]: one query's losses per seed (and draw)."""
    top, controls, baseline = (np.asarray(a, dtype=float) for a in (top, controls, baseline))
    controls = controls.reshape(len(top), -1)
    per_seed = top - controls.mean(axis=1)
    ctrl_rise = controls - baseline[:, None]
    sd = float(ctrl_rise.std(ddof=1)) if ctrl_rise.size > 1 else float("nan")
    iv = t_interval(per_seed, confidence)
    return RemovalEffect(
        effect=iv,
        p_value=t_test_p(per_seed),
        baseline_loss=float(baseline.mean()),
        top_rise=float((top - baseline).mean()),
        control_rise=float(ctrl_rise.mean()),
        control_sd=sd,
        standardized=float(iv.mean / sd) if sd and np.isfinite(sd) and sd > 0 else float("nan"),
    )


def verdict(effect: RemovalEffect, changed_top: float, changed_control: float, alpha: float = 0.05) -> str:
    """Seed 001's three cases, made testable.

    - not influential (case 3, a false positive of the method): the loss did not rise
      significantly more than with random rows (p >= alpha, or the effect is not positive;
      with one seed: the effect is below two control spreads).
    - confirmed (case 1): it did, and the output changed -- the greedy generation differs
      from the baseline's (same seed, nothing removed) in at least half of the seeds, more
      often than after random removals.
    - partial (case 2): it did, but the output survived (other rows still teach it).

    `changed_top` / `changed_control`: fraction of seeds (and draws) whose generation is no
    longer the baseline's generation.
    """
    if effect.effect.n >= 2:
        significant = effect.effect.mean > 0 and effect.p_value < alpha
    else:
        significant = effect.effect.mean > 2 * (effect.control_sd if np.isfinite(effect.control_sd) else np.inf)
    if not significant:
        return "not influential"
    if changed_top >= 0.5 and changed_top > changed_control:
        return "confirmed"
    return "partial"
