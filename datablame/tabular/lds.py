"""The linear datamodeling score (LDS, Park et al. 2023) of tabular methods: M retrainings on random
subsets of the train rows.

Subset j keeps exactly round(fraction * N) train rows, drawn from (seed, j) only, so raising M keeps
the first subsets (classification: a draw that misses a class of the train rows is redrawn, so every
subset model knows every class). A fresh model with the same settings and seed is trained on each
subset. For query q a method predicts the subset model's goodness on q as the sum of its scores over
the kept rows, sum_{i in S_j} score[q, i]; the LDS of q is the Spearman correlation, over the M
subsets, between that prediction and the subset model's actual -loss_q (cross-entropy in nats, or
half the squared standardised error).

Sign: every tabular method's scores are oriented "higher = the row pushed the query's loss down",
so a sum over kept rows should rise with -loss: LDS > 0 = the method's scores predict retraining
outcomes, 0 = no better than chance (the `random` method's floor), < 0 = the sign is backwards.
A query on which a method's prediction (or the retrained loss) does not vary has no LDS; it is
counted in `undefined`. Reported per method: the mean over queries with a percentile bootstrap 95%
interval resampling queries (`datablame.metrics.bootstrap_ci`, the same as the text path's LDS).

The per-subset math is the text path's (`datablame.verify.lds`), repeated here because tabular sits
below verify in the layering.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from datablame.errors import DatablameError
from datablame.metrics import bootstrap_ci, mean_metric
from datablame.tabular.model_base import TabularModel

MAX_REDRAWS = 100


def subset_masks(n_rows: int, fraction: float, num_subsets: int, seed: int = 0,
                 y: np.ndarray | None = None) -> np.ndarray:
    """(M, N) boolean masks with exactly round(fraction * N) rows each; subset j depends only on
    (seed, j) (and, given class labels `y`, is redrawn until it holds every class of `y`)."""
    size = int(round(fraction * n_rows))
    if not 0 < size < n_rows:
        raise DatablameError(f"verify.lds.fraction={fraction} keeps {size} of {n_rows} train rows per subset.",
                             "choose a fraction with 0 < fraction * n_train < n_train (default 0.5).")
    if num_subsets < 2:
        raise DatablameError(f"LDS needs at least 2 subset models, got {num_subsets}.",
                             "set verify.lds.subsets to e.g. 32.")
    classes = None if y is None else np.unique(y)
    masks = np.zeros((num_subsets, n_rows), dtype=bool)
    for j in range(num_subsets):
        rng = np.random.default_rng([seed, j, 0x1D5])
        for _ in range(MAX_REDRAWS):
            pick = rng.choice(n_rows, size=size, replace=False)
            if classes is None or len(np.unique(np.asarray(y)[pick])) == len(classes):
                break
        else:
            raise DatablameError(f"No subset of {size} train rows in {MAX_REDRAWS} draws holds every class.",
                                 "raise verify.lds.fraction, or use more train rows.")
        masks[j, pick] = True
    return masks


def subset_losses(model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray,
                  y_query: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(M, Q) each query's loss under a fresh model (same settings and seed) trained on each subset."""
    return np.stack([model.clone().fit(X_train[m], y_train[m]).loss(X_query, y_query) for m in masks])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def lds_per_query(scores: np.ndarray, masks: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """(Q,) Spearman over subsets of (masks @ scores[q]) and -losses[:, q]; NaN where undefined.
    scores (Q, N), masks (M, N), losses (M, Q)."""
    pred = masks.astype(np.float64) @ np.asarray(scores, float).T  # (M, Q)
    return np.array([_spearman(pred[:, q], -losses[:, q]) for q in range(pred.shape[1])])


def summarize_lds(values: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """{mean, ci_low, ci_high, n, undefined}: mean over queries, percentile bootstrap 95% interval."""
    v = [float(x) for x in values]
    lo, hi = bootstrap_ci(v, seed=seed)
    n = int(sum(not np.isnan(x) for x in v))
    return {"mean": mean_metric(v), "ci_low": lo, "ci_high": hi, "n": n, "undefined": len(v) - n}


def lds_check(model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray,
              y_query: np.ndarray, scores: dict[str, np.ndarray], *, num_subsets: int = 32, fraction: float = 0.5,
              seed: int = 0) -> dict[str, Any]:
    """LDS of each method's scores (Q, N on these train rows) over `num_subsets` retrainings.
    `model` gives the settings and seed (it is not modified)."""
    y_classes = y_train if model.task == "classification" else None
    masks = subset_masks(len(y_train), fraction, num_subsets, seed, y_classes)
    t0 = time.perf_counter()
    losses = subset_losses(model, X_train, y_train, X_query, y_query, masks)
    out: dict[str, Any] = {"subsets": num_subsets, "fraction": fraction, "seed": seed,
                           "rows_per_subset": int(masks[0].sum()), "train_rows": len(y_train),
                           "queries": len(y_query), "retrain_seconds": time.perf_counter() - t0,
                           "target": "-loss of the query under each subset model", "per_method": {}}
    for name, s in scores.items():
        per_query = lds_per_query(s, masks, losses)
        out["per_method"][name] = {**summarize_lds(per_query, seed=seed),
                                   "per_query": [None if np.isnan(x) else float(x) for x in per_query]}
    return out
