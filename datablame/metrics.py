"""Ranking metrics against ground-truth rows, per query and averaged with bootstrap CIs.

Per-query functions take `scores` (one query's score per row, higher = more responsible)
and `relevant` (indices of the true rows). Rank-based metrics (recall@k, precision@k,
reciprocal rank, average precision, the precision-recall curve) break ties by row order, as
the reports do. ROC-AUC is the probability that a random true row scores above a random
other row, ties counting one half (the Mann-Whitney statistic), so it is tie-aware and
does not depend on row order. A query without true rows (or, for ROC-AUC, without other
rows) gives NaN, which the averages skip.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RECALL_KS = (1, 5, 10)
PRECISION_KS = (1, 5, 10)


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def recall_at_k(scores: np.ndarray, relevant: Iterable[int], k: int) -> float:
    """Share of the true rows that are among the top k."""
    rel = set(relevant)
    if not rel:
        return float("nan")
    return len(rel.intersection(_order(scores)[:k].tolist())) / len(rel)


def precision_at_k(scores: np.ndarray, relevant: Iterable[int], k: int) -> float:
    """Share of the top k that are true rows."""
    rel = set(relevant)
    top = _order(scores)[:k].tolist()
    return len(rel.intersection(top)) / max(len(top), 1)


def reciprocal_rank(scores: np.ndarray, relevant: Iterable[int]) -> float:
    """1 / rank of the first true row (0 when there is none)."""
    rel = set(relevant)
    for rank, j in enumerate(_order(scores).tolist(), start=1):
        if j in rel:
            return 1.0 / rank
    return 0.0


def average_precision(scores: np.ndarray, relevant: Iterable[int]) -> float:
    """Mean over the true rows of the precision at each true row's rank."""
    rel = set(relevant)
    if not rel:
        return float("nan")
    hits, total = 0, 0.0
    for rank, j in enumerate(_order(scores).tolist(), start=1):
        if j in rel:
            hits += 1
            total += hits / rank
    return total / len(rel)


def roc_auc(scores: np.ndarray, relevant: Iterable[int]) -> float:
    """P(score of a random true row > score of a random other row), ties count 1/2."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=float)
    mask = np.zeros(len(s), dtype=bool)
    mask[list(set(relevant))] = True
    n_pos, n_neg = int(mask.sum()), int((~mask).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s, method="average")  # ascending, ties share their mean rank
    return float((ranks[mask].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_curve(scores: np.ndarray, relevant: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) after each rank 1..n (for the PR plots)."""
    rel = set(relevant)
    order = _order(scores)
    hit = np.fromiter((j in rel for j in order.tolist()), dtype=float, count=len(order))
    hits = np.cumsum(hit)
    ranks = np.arange(1, len(order) + 1)
    return hits / max(len(rel), 1), hits / ranks


def query_metrics(scores: np.ndarray, relevant: Sequence[int], ks: Sequence[int] = RECALL_KS,
                  pks: Sequence[int] = PRECISION_KS) -> dict[str, float]:
    """Every metric for one query."""
    out = {f"recall@{k}": recall_at_k(scores, relevant, k) for k in ks}
    out.update({f"precision@{k}": precision_at_k(scores, relevant, k) for k in pks})
    out["mrr"] = reciprocal_rank(scores, relevant)
    out["ap"] = average_precision(scores, relevant)
    out["roc_auc"] = roc_auc(scores, relevant)
    return out


def mean_metric(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    return float(v.mean()) if len(v) else float("nan")


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over queries (NaNs skipped); deterministic in `seed`.

    With one value the interval is that value; with none it is (nan, nan).
    """
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarize(per_query: Sequence[dict[str, float]], *, n_boot: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """metric -> {mean, ci_low, ci_high, n} over queries."""
    keys = list(per_query[0]) if per_query else []
    out = {}
    for key in keys:
        vals = [q[key] for q in per_query]
        lo, hi = bootstrap_ci(vals, n_boot=n_boot, confidence=confidence, seed=seed)
        out[key] = {"mean": mean_metric(vals), "ci_low": lo, "ci_high": hi,
                    "n": int(sum(not np.isnan(x) for x in vals))}
    return out


def evaluate(scores: np.ndarray, truth: Sequence[Sequence[int]], **kw) -> list[dict[str, float]]:
    """Per-query metrics for a score matrix [queries, rows] and each query's true rows."""
    return [query_metrics(scores[i], rel, **kw) for i, rel in enumerate(truth)]


def topk_jaccard(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """|top-k(a) ∩ top-k(b)| / |top-k(a) ∪ top-k(b)| of two score vectors over the same rows
    (ties broken toward the lower row index, as in every ranking here)."""
    ta, tb = set(_order(a)[:k].tolist()), set(_order(b)[:k].tolist())
    return len(ta & tb) / len(ta | tb) if ta | tb else float("nan")
