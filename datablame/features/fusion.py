"""Evidence fusion: one ranking from several kinds of evidence (lexical, semantic, gradient).

Lexical and embedding methods find the rows that *state* what the model said; gradient and
influence methods predict what *retraining* would change. Reciprocal-rank fusion (Cormack et
al. 2009) combines rankings without calibrating their scores:

    fused[r] = sum_m w_m / (c + rank_m(r))        rank 1 = best; rows a method did not rank add 0

so a row ranked high by two kinds of evidence beats a row ranked high by one. Used by the
`fused` method (every row ranked by each component) and by the cascade's fusion stage (the
candidates ranked by each stage). `shared_span` gives the longest run of words a lexical hit
shares with the query, the evidence a user can read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

RRF_C = 60  # the usual constant: damps the weight of the very top ranks

_WORD = re.compile(r"\w+", re.UNICODE)


def ranks_desc(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each entry by descending score (ties: lower index first); non-finite
    scores (rows a method did not rank) get rank 0, meaning unranked."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    order = np.lexsort((np.arange(len(scores)), -np.where(finite, scores, 0.0)))
    order = order[finite[order]]
    ranks = np.zeros(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def reciprocal_rank_fusion(ranks: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None,
                           c: float = RRF_C) -> np.ndarray:
    """sum_m w_m / (c + rank_m) over the methods that ranked a row (rank 0 = unranked adds 0).
    `ranks`: method -> [n] 1-based ranks (as `ranks_desc`); unit: the RRF score, > 0 when ranked."""
    if not ranks:
        raise ValueError("nothing to fuse")
    n = len(next(iter(ranks.values())))
    out = np.zeros(n, dtype=np.float64)
    for name, r in ranks.items():
        r = np.asarray(r)
        w = 1.0 if weights is None else float(weights.get(name, 1.0))
        out += np.where(r > 0, w / (c + np.maximum(r, 1)), 0.0)
    return out


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def shared_span(query: str, row: str, min_words: int = 2) -> str | None:
    """The longest run of consecutive words (case-insensitive) found in both texts, as the row
    writes it; None when no run of `min_words` words is shared."""
    q, r_words = _words(query), _WORD.findall(row)
    r = [w.lower() for w in r_words]
    best, end = 0, 0
    prev = [0] * (len(r) + 1)
    for i in range(1, len(q) + 1):
        cur = [0] * (len(r) + 1)
        for j in range(1, len(r) + 1):
            if q[i - 1] == r[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best, end = cur[j], j
        prev = cur
    return " ".join(r_words[end - best:end]) if best >= min_words else None


def row_evidence(ranks: Mapping[str, np.ndarray], row: int, *, top: int, query_text: str | None = None,
                 row_text: str | None = None, lexical: Sequence[str] = ()) -> dict:
    """What supports one row: per component its rank (None = not ranked), which components put
    it in their top `top`, and the words it shares with the query when a lexical one did."""
    per = {m: (int(r[row]) if r[row] > 0 else None) for m, r in ranks.items()}
    found_by = [m for m, k in per.items() if k is not None and k <= top]
    out: dict = {"ranks": per, "found_by": found_by}
    if query_text is not None and row_text is not None and any(m in found_by for m in lexical):
        out["shared_span"] = shared_span(query_text, row_text)
    return out
