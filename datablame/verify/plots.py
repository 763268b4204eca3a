"""Plots of the verification results (matplotlib, Agg, PNG next to the JSON they show)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def plot_effect_vs_k(data: dict[str, Any], path: Path) -> Path:
    """Loss rise over the baseline vs k: one line per method (mean over queries, CI over
    seeds), the control (k random rows) as a band (t-interval over seeds and draws)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bands = sorted(data["control_band"], key=lambda b: b["k"])
    ks = [b["k"] for b in bands]
    lo = [b["control_rise"]["low"] if np.isfinite(b["control_rise"]["low"]) else b["control_rise_min"] for b in bands]
    hi = [b["control_rise"]["high"] if np.isfinite(b["control_rise"]["high"]) else b["control_rise_max"] for b in bands]
    mid = [b["control_rise"]["mean"] for b in bands]
    if len(ks) == 1:  # a band needs width: draw it around the single k
        ax.fill_between([ks[0] * 0.8, ks[0] * 1.2], [lo[0]] * 2, [hi[0]] * 2, color="grey", alpha=0.3, label="control (random k) CI")
    else:
        ax.fill_between(ks, lo, hi, color="grey", alpha=0.3, label="control (random k) CI")
    ax.plot(ks, mid, color="grey", lw=1, ls="--")
    for m in dict.fromkeys(s["method"] for s in data["summary"]):
        rows = sorted((s for s in data["summary"] if s["method"] == m), key=lambda s: s["k"])
        y = [r["top_rise"]["mean"] for r in rows]
        err = np.array([[r["top_rise"]["mean"] - r["top_rise"]["low"], r["top_rise"]["high"] - r["top_rise"]["mean"]]
                        for r in rows]).T
        err = np.nan_to_num(err)
        ax.errorbar([r["k"] for r in rows], y, yerr=err, marker="o", capsize=3, label=f"{m} top-k")
    what = "corrupted" if data.get("strategy") == "flip" else "removed"
    ax.set_xlabel(f"k (rows {what})")
    ax.set_ylabel("query completion loss rise over baseline (nats/token)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(f"verify: top-k vs random-k {what}, {len(data['settings']['seeds'])} seeds")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lds(table: Sequence[dict[str, Any]], path: Path, title: str = "LDS") -> Path:
    """Bar chart of the mean LDS per method with its bootstrap CI."""
    plt = _plt()
    rows = [r for r in table if "lds" in r and np.isfinite(r["lds"])]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.8))
    names = [r["method"] for r in rows]
    vals = [r["lds"] for r in rows]
    err = np.nan_to_num(np.array([[r["lds"] - r["ci_low"], r["ci_high"] - r["lds"]] for r in rows]).T) if rows else None
    ax.bar(names, vals, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("LDS (mean Spearman over queries)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def plot_loo(effect: np.ndarray, scores: dict[str, np.ndarray], query_ids: Sequence[str], path: Path) -> Path:
    """Per query (up to 4): leave-one-out effect of each row vs each method's score (ranks)."""
    from scipy.stats import rankdata

    plt = _plt()
    nq = min(4, len(query_ids))
    fig, axes = plt.subplots(1, max(nq, 1), figsize=(3.4 * max(nq, 1), 3.2), squeeze=False)
    for a in range(nq):
        ax = axes[0, a]
        y = rankdata(effect[a]) / effect.shape[1]
        for m, s in scores.items():
            ax.scatter(rankdata(s[a]) / s.shape[1], y, s=6, alpha=0.6, label=m)
        ax.set_title(str(query_ids[a]), fontsize=9)
        ax.set_xlabel("method score (rank fraction)")
        if a == 0:
            ax.set_ylabel("LOO effect (rank fraction)")
    if scores and nq:
        axes[0, 0].legend(fontsize=7)
    return _save(fig, path)
