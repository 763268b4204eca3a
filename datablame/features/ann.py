"""Approximate search of the feature store for the dot-product gradient methods.

`grad_dot` and `grad_cosine` score a row by the (normalised) dot product of the query's and the
row's projected gradients, so a FAISS index over the store (`datablame index`) can propose the
top `attribution.store.ann_candidates` rows per query; those rows are then re-scored exactly
(the same fp16 -> fp32 -> fp64 dot product as the streaming path, `dot_scores`) and every
other row gets -inf (no rank, like rows outside the retrieval cascade's candidates).

`attribution.store.search` picks the path: `exact` (the default: stream the whole store),
`ann` (the index; a store without one is refused, naming `datablame index`) or `auto` (ann from
`ann_min_rows` rows up when an index exists, exact below). Each answer records the path that
produced it, and an ANN answer its measured recall@10 against exact search on a sample of at
most `ann_recall_queries` queries (exact scores computed for those queries only; 0 skips it,
e.g. when serving one query at a time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.layout import RunLayout
from datablame.store.faiss_index import FaissIndex, load_faiss_index
from datablame.store.rows import StoreRows, dot_scores

RECALL_K = 10
_NO_INDEX_FIX = ("build the index with `datablame index --config <run.yaml>` (not --faiss none), "
                 "or set attribution.store.search: exact")
NOT_DOT = ("this method does not score by a dot product of query and row features, "
           "so it reads every row as before (no ANN)")


@dataclass
class SearchPlan:
    """Which path answers a method: 'ann' (with its index) or 'exact', and why."""

    path: str
    reason: str
    index: FaissIndex | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


def plan_search(ctx: AttributionContext, metric: str, rows: Any) -> SearchPlan:
    """The path for a method scoring by `metric` ('dot' or 'cosine') over `rows`."""
    s = ctx.attribution.store
    if s.search == "exact":
        return SearchPlan("exact", "attribution.store.search is exact: streamed the whole store")
    forced = s.search == "ann"
    if ctx.store is None:
        if forced:
            raise DatablameError(
                "attribution.store.search is 'ann' but the run has no feature store (and so no FAISS index).",
                _NO_INDEX_FIX,
            )
        return SearchPlan("exact", "no feature store: gradients computed and scored exactly")
    n = ctx.store.n_rows
    if not forced and n < s.ann_min_rows:
        return SearchPlan("exact", f"search auto: {n} rows < ann_min_rows {s.ann_min_rows}, streamed exactly")
    path = RunLayout(ctx.run_dir).faiss_index
    if not path.is_file():
        if forced:
            raise DatablameError(
                f"attribution.store.search is 'ann' but the feature store {ctx.store.path} has no FAISS index ({path} is missing).",
                _NO_INDEX_FIX,
            )
        return SearchPlan("exact", f"search auto: no FAISS index at {path}, streamed exactly")
    if not isinstance(rows, StoreRows) or len(rows) != n:
        return SearchPlan("exact", "rows are not the whole feature store here (e.g. cascade candidates), scored exactly")
    index = load_faiss_index(path, expect_store=ctx.store)
    if index.metric != metric:
        return SearchPlan("exact", f"the FAISS index ranks by {index.metric}, this method by {metric}: streamed exactly "
                                   f"(build a {metric} index to search it)")
    return SearchPlan("ann", f"FAISS {index.kind} index ({index.metric}) candidates re-scored exactly", index)


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def ann_scores(
    plan: SearchPlan, queries: torch.Tensor, rows: StoreRows, *, normalize: bool, candidates: int, nprobe: int | None,
    recall_queries: int = 8,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores [Q, n_rows] float64: the index's candidates re-scored exactly, -inf elsewhere;
    and what the search did (path, candidates, nprobe, seconds, recall@10 vs exact)."""
    out, info = ann_only(plan, queries, rows, normalize=normalize, candidates=candidates, nprobe=nprobe)
    info.update(measure_recall(queries, rows, out, normalize=normalize, max_queries=recall_queries))
    return out, info


def ann_only(
    plan: SearchPlan, queries: torch.Tensor, rows: StoreRows, *, normalize: bool, candidates: int, nprobe: int | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """`ann_scores` without the recall measurement (what a query costs on the ANN path)."""
    assert plan.index is not None
    index, n = plan.index, len(rows)
    if nprobe is not None:
        index.nprobe = nprobe
    t0 = time.perf_counter()
    c = min(candidates, n)
    _, idx = index.search(queries.detach().cpu().float().numpy(), c)
    out = np.full((len(queries), n), -np.inf, dtype=np.float64)
    uniq = np.unique(idx[idx >= 0])
    if len(uniq):
        s = dot_scores(queries, rows[uniq], normalize=normalize)  # [Q, U], exactly as streaming would
        for qi in range(len(queries)):
            sel = idx[qi][idx[qi] >= 0]
            out[qi, sel] = s[qi, np.searchsorted(uniq, sel)]
    ann_s = time.perf_counter() - t0
    info: dict[str, Any] = {**plan.as_dict(), "kind": index.kind, "metric": index.metric, "nprobe": index.nprobe,
                            "candidates": c, "rows_rescored": int(len(uniq)), "ann_s": ann_s}
    return out, info


def measure_recall(
    queries: torch.Tensor, rows: StoreRows, approx: np.ndarray, *, normalize: bool, max_queries: int = 8,
) -> dict[str, Any]:
    """recall@10 of `approx` vs exact streaming on at most `max_queries` evenly spread queries."""
    nq = min(len(queries), max_queries)
    sample = np.unique(np.linspace(0, len(queries) - 1, nq).round().astype(int)) if nq else np.zeros(0, int)
    k = min(RECALL_K, len(rows))
    t0 = time.perf_counter()
    exact = dot_scores(queries[torch.from_numpy(sample)], rows, normalize=normalize) if len(sample) else np.zeros((0, len(rows)))
    hits = [len(set(a) & set(e)) / k for a, e in zip(_topk(approx[sample], k).tolist(), _topk(exact, k).tolist(), strict=True)]
    return {f"recall_at_{RECALL_K}": float(np.mean(hits)) if hits else None, "recall_queries": int(len(sample)),
            "recall_exact_s": time.perf_counter() - t0}


def search_report(ctx: AttributionContext, fitted: dict[str, Any]) -> dict[str, Any] | None:
    """results.json's `store_search`: per method, the path that answered it (a method's own
    `search_info`, else: it does not score by a dot product). None when there is nothing to
    say (no store and search exact: the run was scored exactly as always)."""
    if ctx.store is None and ctx.attribution.store.search == "exact":
        return None
    s = ctx.attribution.store
    per = {name: getattr(m, "search_info", None) or {"path": "exact", "reason": NOT_DOT} for name, m in fitted.items()}
    return {"search": s.search, "ann_min_rows": s.ann_min_rows, "ann_candidates": s.ann_candidates, "nprobe": s.nprobe,
            "ann_recall_queries": s.ann_recall_queries, "methods": per}
