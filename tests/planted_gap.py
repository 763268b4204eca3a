"""How far the planted rows of each query score above the rest: the sign checks of the method
tests and the ekfac-vs-kronfluence benchmark (imported by name: pytest puts this directory on
sys.path; a benchmark script adds tests/ to sys.path first)."""

from __future__ import annotations

import numpy as np


def _split(scores: np.ndarray, inputs, truth: dict[str, list[str]]):
    """Per query: (its row of scores, its planted row indices, the indices of all other rows)."""
    idx = inputs.corpus.index_of()
    for qi, q in enumerate(inputs.queries):
        rel = [idx[r] for r in truth[q.query_id]]
        yield scores[qi], rel, np.setdiff1d(np.arange(scores.shape[1]), rel)


def planted_gaps(scores: np.ndarray, inputs, truth: dict[str, list[str]]) -> list[float]:
    """Per query: mean score of its planted rows minus the mean of all other rows."""
    return [float(s[rel].mean() - s[rest].mean()) for s, rel, rest in _split(scores, inputs, truth)]


def planted_gap(scores: np.ndarray, inputs, truth: dict[str, list[str]]) -> float:
    """Mean over queries of (mean planted score - mean other score) / std of the query's scores,
    in score standard deviations. Positive when planted rows rank high; a flipped sign makes it
    negative."""
    split = _split(scores, inputs, truth)
    return float(np.mean([(s[rel].mean() - s[rest].mean()) / s.std() for s, rel, rest in split]))
