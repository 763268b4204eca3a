"""From surfaced outputs to blame: score the behaviour's samples against the training rows.

The samples a scan labelled as the behaviour (`phase_scan.json`) become `Query`s (prompt +
surfaced completion). They are blamed on the after-model's fine-tuning corpus in three steps:

1. a shared candidate pool: the `pool_size` rows (default 100) with the highest BM25 score
   against any surfaced query (a row's pool score is its best BM25 over the queries; ties go
   to the lower row index). A pool larger than the corpus is refused.
2. each requested method is run with `run_method` on the run's context restricted to the pool
   (`datablame.retrieval.candidates.restrict_to_rows`, the cascade's restriction): scores
   [queries, pool rows] in the method's own sign and unit (higher = more responsible). Methods
   that fit a kernel or curvature on every row (trak, ekfac, ...) fit it on the pool only.
3. agreement between the methods on the pool: per query, top-k overlap, Jaccard and Spearman,
   averaged over queries (`datablame.report.compare.compare_methods`).

Per method, a row's `blame` over all surfaced queries is its mean percentile within each
query's ranking of the pool: a fraction in [0, 1], 1 = ranked first for every query, higher =
more responsible for the behaviour as a whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from datablame.data.corpus import Query
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.text_index import query_texts, topk_desc
from datablame.methods.base import run_method
from datablame.models.queries import prepare_queries
from datablame.report.compare import compare_methods
from datablame.retrieval.candidates import restrict_to_rows

DEFAULT_POOL = 100


def surfaced_queries(scan: Mapping[str, Any], *, alphas: Sequence[float] | None = None,
                     max_queries: int | None = 20) -> list[Query]:
    """The samples of a scan document labelled as the behaviour, as queries (id
    `<prompt id>@a<alpha>#<sample>`, metadata: alpha, prompt_id, sample, reason). Lowest alpha
    first (the most natural outputs), then prompt and sample order; duplicate (prompt,
    completion) pairs and empty completions are dropped; at most `max_queries` (None = all)."""
    keep = None if alphas is None else {float(a) for a in alphas}
    cells = sorted(scan.get("cells", []), key=lambda c: (c["alpha"], c["prompt_id"]))
    seen: set[tuple[str, str]] = set()
    out: list[Query] = []
    for c in cells:
        if keep is not None and float(c["alpha"]) not in keep:
            continue
        for s in c["samples"]:
            text = s["completion"]
            if s["label"] is not True or not text.strip() or (c["prompt"], text) in seen:
                continue
            seen.add((c["prompt"], text))
            out.append(Query(c["prompt"], text, f"{c['prompt_id']}@a{c['alpha']:g}#{s['sample']}",
                             {"alpha": c["alpha"], "prompt_id": c["prompt_id"], "sample": s["sample"],
                              "reason": s["reason"]}))
            if max_queries is not None and len(out) >= max_queries:
                return out
    return out


def with_queries(ctx: AttributionContext, queries: Sequence[Query]) -> AttributionContext:
    """The run's context with these queries (encoded with the training template and a
    completion loss mask, as `prepare_inputs` does) and no query-dependent shared features."""
    if not queries:
        raise DatablameError("no surfaced sample was labelled as the behaviour, so there is nothing to blame",
                             "raise the alphas or n_samples of the scan, or loosen the classifier's rules")
    prepared, enc = prepare_queries(ctx.model, ctx.tokenizer, list(queries), max_length=ctx.model_cfg.max_length,
                                    max_new_tokens=ctx.attribution.max_new_tokens, loss_on="completion")
    shared = ctx.shared.of_model()
    shared.bm25 = ctx.shared.bm25  # row-only: shared with the run
    return dataclasses.replace(ctx, queries=prepared, query_rows=enc, generated=[False] * len(prepared),
                               shared=shared)


def bm25_pool(ctx: AttributionContext, queries: Sequence[Query], pool_size: int = DEFAULT_POOL) -> np.ndarray:
    """Sorted corpus indices of the `pool_size` rows with the best BM25 score against any query."""
    n = len(ctx.corpus)
    if pool_size < 1 or pool_size > n:
        raise DatablameError(f"the candidate pool of {pool_size} rows is {'larger than' if pool_size > n else 'outside'} "
                             f"the corpus of {n} rows", f"set the pool size between 1 and {n}")
    best = ctx.bm25().scores(query_texts(queries)).max(axis=0)
    return np.sort(topk_desc(best, pool_size)[1])


@dataclass
class BlameResult:
    """Scores of each method over the pool, for every surfaced query."""

    queries: list[Query]
    pool: np.ndarray  # corpus indices of the pool rows, sorted
    pool_row_ids: list[str]
    scores: dict[str, np.ndarray]  # method -> [queries, pool rows], the method's sign and unit
    units: dict[str, dict[str, str]]  # method -> describe() (sign, unit, ...)
    seconds: dict[str, float]
    agreement: dict[str, Any]
    top_k: int = 10
    notes: list[str] = field(default_factory=list)

    def blame(self, method: str) -> np.ndarray:
        """Per pool row, its mean percentile over the queries' rankings: in [0, 1], 1 = first everywhere."""
        s = self.scores[method]
        if s.shape[1] == 1:
            return np.ones(1)
        pct = np.stack([(rankdata(row, method="average") - 1) / (s.shape[1] - 1) for row in s])
        return pct.mean(axis=0)

    def top_rows(self, method: str, k: int | None = None) -> list[tuple[str, float]]:
        """(row id, blame) of the k most blamed pool rows by `method`, most blamed first."""
        b = self.blame(method)
        order = np.lexsort((np.arange(len(b)), -b))[: k or self.top_k]
        return [(self.pool_row_ids[i], float(b[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        per_query = {m: [[self.pool_row_ids[i] for i in np.lexsort((np.arange(len(r)), -r))[: self.top_k]]
                         for r in s] for m, s in self.scores.items()}
        return {
            "queries": [{"query_id": q.query_id, "prompt": q.prompt, "completion": q.completion, **q.metadata}
                        for q in self.queries],
            "pool": {"size": len(self.pool), "row_ids": self.pool_row_ids,
                     "how": "rows with the best BM25 score against any surfaced query"},
            "methods": self.units, "seconds": self.seconds,
            "blame": {m: [{"row_id": r, "blame": b} for r, b in self.top_rows(m)] for m in self.scores},
            # every pool row, most blamed first (the patch stage removes the top K of it)
            "ranking": {m: [{"row_id": r, "blame": b} for r, b in self.top_rows(m, len(self.pool_row_ids))]
                        for m in self.scores},
            "blame_unit": "mean percentile of the row in each query's ranking of the pool, in [0, 1]; "
                          "1 = ranked first for every query (higher = more responsible)",
            "top_k_per_query": per_query, "agreement": self.agreement, "notes": self.notes,
        }


def blame_surfaced(ctx: AttributionContext, queries: Sequence[Query], methods: Sequence[str], *,
                   pool_size: int = DEFAULT_POOL, options: Mapping[str, Mapping[str, Any]] | None = None,
                   top_k: int = 10) -> BlameResult:
    """Score the surfaced `queries` with each of `methods` over a BM25 pool of the run `ctx`
    (the after-model and its fine-tuning corpus), and measure how much the methods agree.
    `options`: per method (default: the run's `attribution.options.<method>`)."""
    if not methods:
        raise DatablameError("no attribution method to blame the surfaced samples with",
                             "name at least one registered method (`datablame methods` lists them)")
    qctx = with_queries(ctx, queries)
    pool = bm25_pool(qctx, qctx.queries, pool_size)
    sub = restrict_to_rows(qctx, pool)
    scores, units, seconds = {}, {}, {}
    for name in dict.fromkeys(methods):
        opts = None if options is None or name not in options else options[name]
        run = run_method(sub, name, opts)
        scores[name], units[name], seconds[name] = run.scores, run.method.describe(), run.seconds
    notes = []
    if len(scores) > 1:
        agreement = compare_methods(scores, top_k)
    else:
        agreement = {}
        notes.append("one method: no agreement to measure")
    return BlameResult(list(qctx.queries), pool, [ctx.corpus[i].row_id for i in pool], scores, units, seconds,
                       agreement, top_k, notes)
