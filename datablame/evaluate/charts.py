"""The evaluation's charts (matplotlib, Agg): the compared models per metric with CI error bars
(`model_scores_comparison.png`) and the training curves (`train.png`).

The training log is the Trainer's `log_history`: `<run>/model/train_summary.json` (written when
training finishes), else the last checkpoint's `trainer_state.json`. Its step entries carry
`loss` and `learning_rate`; throughput comes from the closing entry (`train_samples_per_second`,
`train_steps_per_second`), or per step where an entry has a `*_per_second` key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datablame.layout import ModelLayout

log = logging.getLogger("datablame")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scores_chart(metrics: dict[str, dict[str, dict[str, float]]], path: str | Path) -> Path | None:
    """Grouped bars: metric -> model -> {mean, ci_low, ci_high}. None when there is nothing to draw."""
    metrics = {m: v for m, v in metrics.items() if v}
    if not metrics:
        return None
    plt = _pyplot()
    names = list(dict.fromkeys(n for v in metrics.values() for n in v))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(metrics) * max(1, len(names) / 2)), 4))
    for j, name in enumerate(names):
        xs, means, errs = [], [], [[], []]
        for i, per_model in enumerate(metrics.values()):
            s = per_model.get(name)
            if s is None or s["mean"] != s["mean"]:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            means.append(s["mean"])
            errs[0].append(max(0.0, s["mean"] - s["ci_low"]))
            errs[1].append(max(0.0, s["ci_high"] - s["mean"]))
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks(range(len(metrics)), list(metrics), rotation=20, ha="right")
    ax.set_ylabel("score (mean, 95% CI)")
    ax.set_title("base vs fine-tuned")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def training_log(model_dir: str | Path) -> list[dict[str, Any]]:
    """The Trainer's log_history of a run's model folder ([] when none is readable): the
    summary's (complete once training finished), else the newest checkpoint's."""
    layout = ModelLayout(Path(model_dir))
    for src in [layout.train_summary, *(c / "trainer_state.json" for c in reversed(layout.checkpoints()))]:
        try:
            hist = json.loads(src.read_text(encoding="utf-8")).get("log_history")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(hist, list) and hist:
            return [h for h in hist if isinstance(h, dict)]
    return []


def _series(hist: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(h["step"], h[key]) for h in hist if isinstance(h.get(key), (int, float)) and "step" in h]
    return [p[0] for p in pts], [p[1] for p in pts]


def train_chart(hist: list[dict[str, Any]], path: str | Path) -> Path | None:
    """loss, learning rate and throughput against the step, and the peak GPU memory when the
    training ran on CUDA. None without a loss to draw."""
    steps, loss = _series(hist, "loss")
    if not steps:
        return None
    plt = _pyplot()
    mem_steps, mem = _series(hist, "gpu_memory_gb")
    fig, axes = plt.subplots(1, 4 if mem_steps else 3, figsize=(16 if mem_steps else 12, 3.4))
    if mem_steps:
        axes[3].plot(mem_steps, mem, marker=".", color="tab:red")
        axes[3].set(title="peak GPU memory (GB)", xlabel="step")
    axes[0].plot(steps, loss, marker=".")
    axes[0].set(title="training loss", xlabel="step")
    lr_steps, lr = _series(hist, "learning_rate")
    axes[1].plot(lr_steps, lr, marker=".", color="tab:orange")
    axes[1].set(title="learning rate", xlabel="step")
    rate_keys = sorted({k for h in hist if "loss" in h for k in h if k.endswith("_per_second")})
    if rate_keys:
        for k in rate_keys:
            axes[2].plot(*_series([h for h in hist if "loss" in h], k), marker=".", label=k)
        axes[2].legend(fontsize=7)
        axes[2].set(title="throughput", xlabel="step")
    else:
        final = next((h for h in reversed(hist) if "train_samples_per_second" in h), {})
        bars = {k.removeprefix("train_").replace("_per_second", "/s"): final[k]
                for k in ("train_samples_per_second", "train_steps_per_second") if isinstance(final.get(k), (int, float))}
        if bars:
            axes[2].bar(list(bars), list(bars.values()), color="tab:green")
            for i, v in enumerate(bars.values()):
                axes[2].text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        axes[2].set(title="throughput (whole training)" if bars else "throughput (not logged)")
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
