"""Mean and percentile-bootstrap CI of per-item scores (answers, questions): one summary shape."""

from __future__ import annotations

from collections.abc import Sequence

from datablame.evaluate.settings import BootstrapSettings
from datablame.metrics import bootstrap_ci, mean_metric


def summarize(values: Sequence[float], boot: BootstrapSettings | None = None) -> dict[str, float | int]:
    """{mean, ci_low, ci_high, n} of `values` (NaNs skipped), the CI resampling the items."""
    boot = boot or BootstrapSettings()
    vals = [float(v) for v in values]
    lo, hi = bootstrap_ci(vals, n_boot=boot.n_boot, confidence=boot.confidence, seed=boot.seed)
    return {"mean": mean_metric(vals), "ci_low": lo, "ci_high": hi, "n": sum(v == v for v in vals)}
