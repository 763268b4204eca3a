"""Ground truth by retraining: exact leave-one-out, and a top-k vs random-k removal test.

Leave-one-out: for each train row j, a fresh model with the same settings and seed trained without
j (`TabularModel.fit_without`); truth[q, j] = loss_q(without j) - loss_q(all rows), in the model's
loss unit (nats, or half squared standardised error). Positive = removing the row raised the query's
loss = the row helped, the same orientation as every method's scores.
"""

from __future__ import annotations

import numpy as np

from datablame.errors import DatablameError
from datablame.tabular.model_base import TabularModel


def exact_loo(model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray,
              y_query: np.ndarray, *, rows: np.ndarray | None = None, max_rows: int = 2000) -> np.ndarray:
    """(n_query, n_train) leave-one-out change of each query's loss; columns not in `rows` are NaN.
    `model` is an unfitted or fitted model whose settings are reused (it is not modified)."""
    rows = np.arange(len(y_train)) if rows is None else np.asarray(rows, dtype=int)
    if len(rows) > max_rows:
        raise DatablameError(f"Exact leave-one-out of {len(rows)} rows means {len(rows)} retrainings "
                             f"(limit {max_rows}).", "pass rows=... (a subset) or use TableData.subset().")
    base = model.clone().fit(X_train, y_train).loss(X_query, y_query)
    out = np.full((len(X_query), len(y_train)), np.nan)
    for j in rows:
        out[:, j] = model.fit_without(X_train, y_train, [int(j)]).loss(X_query, y_query) - base
    return out


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval of the mean."""
    from scipy.stats import t

    v = np.asarray(values, float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def removal_test(model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray,
                 y_query: np.ndarray, scores: np.ndarray, *, k: int = 10, seeds: tuple[int, ...] = (0, 1, 2),
                 ) -> dict[str, float]:
    """Remove the k train rows with the highest mean score over the queries, retrain, and compare the
    rise of the mean query loss with removing k random rows, per seed (the model's seed and the random
    draw). effect = rise(top-k) - rise(random-k); > 0: the method found rows that mattered more than
    chance. Returns the mean rises and the effect with a 95% t interval over the seeds."""
    if not 0 < k < len(y_train):
        raise DatablameError(f"k={k} rows cannot be removed from {len(y_train)}.", "pass 0 < k < n_train.")
    top = np.argsort(-np.asarray(scores, float).mean(axis=0), kind="stable")[:k]
    top_rise, rand_rise = [], []
    for s in seeds:
        m = model.clone(seed=s)
        base = m.clone().fit(X_train, y_train).loss(X_query, y_query).mean()
        top_rise.append(m.fit_without(X_train, y_train, top).loss(X_query, y_query).mean() - base)
        rand = np.random.default_rng(1000 + s).choice(len(y_train), size=k, replace=False)
        rand_rise.append(m.fit_without(X_train, y_train, rand).loss(X_query, y_query).mean() - base)
    effect = np.array(top_rise) - np.array(rand_rise)
    mean, lo, hi = t_interval(effect)
    return {"k": k, "seeds": len(seeds), "top_k_rise": float(np.mean(top_rise)),
            "random_k_rise": float(np.mean(rand_rise)), "effect": mean, "effect_low": lo, "effect_high": hi}


def agreement_with_loo(scores: np.ndarray, truth: np.ndarray, *, k: int = 10) -> dict[str, float]:
    """Mean over queries of Spearman and Pearson between scores and LOO truth, and the share of the
    top-k rows (by score) that are among LOO's top k. Columns where truth is NaN are skipped."""
    from scipy.stats import pearsonr, spearmanr

    cols = ~np.isnan(truth).any(axis=0)
    s, t = np.asarray(scores, float)[:, cols], truth[:, cols]
    sp, pe, ov = [], [], []
    for a, b in zip(s, t, strict=True):
        if np.std(a) == 0 or np.std(b) == 0:
            sp.append(0.0)
            pe.append(0.0)
        else:
            sp.append(float(spearmanr(a, b).statistic))
            pe.append(float(pearsonr(a, b).statistic))
        kk = min(k, len(a))
        ov.append(len(set(np.argsort(-a, kind="stable")[:kk]) & set(np.argsort(-b, kind="stable")[:kk])) / kk)
    return {"spearman": float(np.mean(sp)), "pearson": float(np.mean(pe)), f"top{k}_overlap": float(np.mean(ov))}


def pooled_pearson(scores: np.ndarray, truth: np.ndarray) -> float:
    """Pearson over every (query, row) pair at once (influence's natural scale test)."""
    cols = ~np.isnan(truth).any(axis=0)
    return float(np.corrcoef(np.asarray(scores)[:, cols].ravel(), truth[:, cols].ravel())[0, 1])

