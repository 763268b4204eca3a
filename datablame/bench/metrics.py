"""Ranking metrics against ground-truth rows (per query; callers average).

All take `scores` (one query's score per row, higher = more responsible) and `relevant`
(indices of the true rows). Ties are broken by row order, as in the reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def recall_at_k(scores: np.ndarray, relevant: Iterable[int], k: int) -> float:
    rel = set(relevant)
    if not rel:
        return float("nan")
    return len(rel.intersection(_order(scores)[:k].tolist())) / len(rel)


def precision_at_k(scores: np.ndarray, relevant: Iterable[int], k: int) -> float:
    rel = set(relevant)
    top = _order(scores)[:k].tolist()
    return len(rel.intersection(top)) / max(len(top), 1)


def reciprocal_rank(scores: np.ndarray, relevant: Iterable[int]) -> float:
    rel = set(relevant)
    for rank, j in enumerate(_order(scores).tolist(), start=1):
        if j in rel:
            return 1.0 / rank
    return 0.0


def average_precision(scores: np.ndarray, relevant: Iterable[int]) -> float:
    rel = set(relevant)
    if not rel:
        return float("nan")
    hits, total = 0, 0.0
    for rank, j in enumerate(_order(scores).tolist(), start=1):
        if j in rel:
            hits += 1
            total += hits / rank
    return total / len(rel)


def mean_metric(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    return float(v.mean()) if len(v) else float("nan")
