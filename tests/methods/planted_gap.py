"""Sign checks on the planted run (imported by name: pytest puts this directory on sys.path)."""

from __future__ import annotations

import numpy as np


def planted_gaps(scores: np.ndarray, inputs, truth: dict[str, list[str]]) -> list[float]:
    """Per query: mean score of its planted rows minus the mean of all other rows."""
    idx = inputs.corpus.index_of()
    gaps = []
    for qi, q in enumerate(inputs.queries):
        rel = [idx[r] for r in truth[q.query_id]]
        rest = np.setdiff1d(np.arange(scores.shape[1]), rel)
        gaps.append(float(scores[qi, rel].mean() - scores[qi, rest].mean()))
    return gaps
