"""The retrieval cascade (seeds 001/003): cheap stages narrow the rows, gradients rank the rest.

    metadata filter -> sentence-embedding search -> BM25 -> gradient re-rank
    (all rows)        (embedding_k rows)           (bm25_k)  (final_k ranked)

Each stage keeps the best candidates of the previous one; a stage whose size is null (or a
filter that is null) is skipped. The embedding and BM25 stages rank by the query's prompt +
completion against `Row.text`; the re-rank stage calls `rerank(query_index, rows)` (default
`GradientReranker`: gradient cosine, featurizing only the candidates). Ties break toward
the lower row index, so results are deterministic.

Every stage reports its candidates in/out and its seconds per query (work shared by all
queries, such as the filter or embedding the queries in one batch, is split evenly). With
`evaluate=True` (or `reference_scores` given) each stage also reports its recall of the
exhaustive top-k: the fraction of the `recall_k` rows with the highest reference score over
the *whole* corpus (default: `rerank` over every row, i.e. exhaustive gradient cosine)
that are still among the stage's output. The re-rank stage's recall is then the recall of
the cascade's final top-k; recall can only fall from stage to stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from datablame.config import RetrievalConfig
from datablame.data.corpus import Corpus, Query
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.text_index import (
    TextIndices,
    build_text_indices,
    has_text_indices,
    load_text_indices,
    query_texts,
    text_index_dir,
    topk_desc,
)
from datablame.retrieval.filter import compile_filter
from datablame.retrieval.rerank import GradientReranker, Reranker

log = logging.getLogger(__name__)

DEFAULT_FINAL_K = 10
STAGES = ("filter", "embedding", "bm25", "rerank")


@dataclass
class StageReport:
    """One stage for one query (seconds: this query's share of the stage's work)."""

    name: str
    candidates_in: int
    candidates_out: int
    seconds: float
    recall: float | None = None  # of the exhaustive top-k; None when not evaluated

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.name, "candidates_in": self.candidates_in, "candidates_out": self.candidates_out,
                "seconds": self.seconds, "recall": self.recall}


@dataclass
class QueryCascade:
    """What the cascade returned for one query."""

    query_index: int
    query_id: str
    rows: np.ndarray  # final top rows (indices into the corpus), best first
    scores: np.ndarray  # their scores from the last stage that ran (re-rank: gradient cosine)
    reranked_rows: np.ndarray  # every row that reached the last stage, in its order
    reranked_scores: np.ndarray
    stages: list[StageReport] = field(default_factory=list)
    reference_top: np.ndarray | None = None  # exhaustive top-k when evaluated
    survivors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # stage -> rows kept

    def to_dict(self, row_ids: Sequence[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query_index": self.query_index, "query_id": self.query_id,
            "rows": self.rows.tolist(), "scores": self.scores.tolist(),
            "stages": [s.to_dict() for s in self.stages],
        }
        if row_ids is not None:
            out["row_ids"] = [row_ids[i] for i in self.rows]
        if self.reference_top is not None:
            out["reference_top"] = self.reference_top.tolist()
        return out


@dataclass
class CascadeResult:
    queries: list[QueryCascade]
    n_rows: int
    final_k: int
    recall_k: int | None
    config: dict[str, Any]
    seconds: float  # wall time of the whole cascade (evaluation excluded)
    reference_seconds: float | None = None  # scoring every row for the evaluation

    def stage_summary(self) -> list[dict[str, Any]]:
        """Per stage over all queries: mean candidates in/out, total and mean seconds, mean recall."""
        out = []
        for name in STAGES:
            reps = [s for q in self.queries for s in q.stages if s.name == name]
            if not reps:
                continue
            recalls = [s.recall for s in reps if s.recall is not None]
            out.append({
                "stage": name,
                "candidates_in": float(np.mean([s.candidates_in for s in reps])),
                "candidates_out": float(np.mean([s.candidates_out for s in reps])),
                "seconds_total": float(sum(s.seconds for s in reps)),
                "seconds_per_query": float(np.mean([s.seconds for s in reps])),
                "recall": float(np.mean(recalls)) if recalls else None,
            })
        return out

    def score_matrix(self, fill: float = -np.inf) -> np.ndarray:
        """Dense [Q, n_rows] float64: last-stage scores of the rows that reached it, `fill` elsewhere."""
        out = np.full((len(self.queries), self.n_rows), fill, dtype=np.float64)
        for qi, q in enumerate(self.queries):
            out[qi, q.reranked_rows] = q.reranked_scores
        return out

    def to_dict(self, row_ids: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows, "final_k": self.final_k, "recall_k": self.recall_k, "config": self.config,
            "seconds": self.seconds, "reference_seconds": self.reference_seconds,
            "stages": self.stage_summary(), "queries": [q.to_dict(row_ids) for q in self.queries],
        }


def _check_k(name: str, k: int | None) -> None:
    if k is not None and int(k) < 1:
        raise DatablameError(f"attribution.retrieval.{name} is {k}; it must be a positive number of rows",
                             f"set attribution.retrieval.{name} to at least 1, or null to skip the stage")


def _prepare_indices(corpus: Corpus, config: RetrievalConfig, indices: TextIndices | None,
                     progress: bool) -> TextIndices | None:
    need_emb, need_bm25 = config.embedding_k is not None, config.bm25_k is not None
    if not (need_emb or need_bm25):
        return indices
    if indices is None:
        return build_text_indices(corpus, None, embedding_model=config.embedding_model, bm25=need_bm25,
                                  embedding=need_emb, progress=progress)
    indices.check_corpus(corpus)
    where = f" at {indices.path}" if indices.path else ""
    fix = "rebuild the text indices (`datablame index`), or set the stage's size to null to skip it"
    if need_emb and indices.embedding is None:
        raise DatablameError(f"the text indices{where} have no embedding index", fix)
    if need_bm25 and indices.bm25 is None:
        raise DatablameError(f"the text indices{where} have no BM25 index", fix)
    if need_emb and indices.embedding.model != config.embedding_model:
        raise DatablameError(
            f"the embedding index{where} was built with {indices.embedding.model!r}, but "
            f"attribution.retrieval.embedding_model is {config.embedding_model!r}", fix)
    return indices


def _ordered(rows: np.ndarray, scores: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """rows sorted by score (desc), ties toward the lower row; the first k."""
    order = np.lexsort((rows, -scores))
    if k is not None:
        order = order[:k]
    return rows[order], scores[order]


def _recall(reference_top: np.ndarray | None, survivors: np.ndarray) -> float | None:
    if reference_top is None or len(reference_top) == 0:
        return None
    return float(np.isin(reference_top, survivors).mean())


def run_cascade(
    corpus: Corpus,
    queries: Sequence[Query],
    config: RetrievalConfig,
    indices: TextIndices | None = None,
    rerank: Reranker | None = None,
    *,
    final_k: int | None = None,
    evaluate: bool = False,
    reference_scores: np.ndarray | None = None,
    recall_k: int | None = None,
    progress: bool = True,
) -> CascadeResult:
    """Run the cascade for every query (see the module docstring).

    corpus, queries: the rows and the queries (completions known; query texts are prompt +
        completion). config: `attribution.retrieval` (filter, embedding_k, bm25_k,
        embedding_model, final_k; `enabled` is the caller's business). indices: the corpus'
        text indices (`load_text_indices`; refused if built from other rows); None builds the
        ones the stages need in memory. rerank: `rerank(query_index, rows) -> scores`
        (higher = more responsible), e.g. `GradientReranker(inputs)`; None skips the stage
        and the last text stage's order is final. final_k: rows returned per query (default
        config.final_k, else 10). evaluate / reference_scores [Q, n_rows]: report each
        stage's recall of the reference top-`recall_k` (default final_k); without
        reference_scores, `rerank` scores every row once per query after the timed run.
    """
    n, nq = len(corpus), len(queries)
    if n == 0:
        raise DatablameError("the corpus is empty, so there is nothing to retrieve", "check data.path and the cleaning report")
    for name in ("embedding_k", "bm25_k", "final_k"):
        _check_k(name, getattr(config, name, None))
    final_k = int(final_k or getattr(config, "final_k", None) or DEFAULT_FINAL_K)
    _check_k("final_k", final_k)
    if (evaluate or reference_scores is not None) and reference_scores is None and rerank is None:
        raise DatablameError("evaluating the cascade needs reference scores or a re-rank function",
                             "pass reference_scores=[Q, n_rows] or rerank=GradientReranker(inputs)")
    if reference_scores is not None and np.shape(reference_scores) != (nq, n):
        raise DatablameError(f"reference_scores has shape {np.shape(reference_scores)}, expected {(nq, n)}",
                             "pass one score per query and corpus row")
    texts = query_texts(queries) if (config.embedding_k is not None or config.bm25_k is not None) else []
    t_start = time.perf_counter()
    indices = _prepare_indices(corpus, config, indices, progress)
    index_s = time.perf_counter() - t_start  # building in-memory indices is not a query-time stage cost

    per_query: list[list[StageReport]] = [[] for _ in range(nq)]
    # candidate rows per query after the shared stages (None = every row)
    shared: np.ndarray | None = None
    if config.filter:
        t0 = time.perf_counter()
        shared = np.flatnonzero(compile_filter(config.filter).mask(corpus)).astype(np.int64)
        dt = (time.perf_counter() - t0) / max(nq, 1)
        if len(shared) == 0:
            raise DatablameError(f"the metadata filter {config.filter!r} keeps no row",
                                 "loosen attribution.retrieval.filter (or set it to null)")
        for reps in per_query:
            reps.append(StageReport("filter", n, len(shared), dt))
    kept: list[dict[str, np.ndarray]] = [{} if shared is None else {"filter": shared} for _ in range(nq)]
    cands: list[np.ndarray] = [np.arange(n, dtype=np.int64) if shared is None else shared for _ in range(nq)]
    last_scores: list[np.ndarray | None] = [None] * nq

    if config.embedding_k is not None and nq:
        t0 = time.perf_counter()
        qv = indices.embedding.embed_queries(texts)
        sc, rows = indices.embedding.search(qv, int(config.embedding_k), shared)
        dt = (time.perf_counter() - t0) / nq
        for qi in range(nq):
            keep = rows[qi] >= 0  # faiss pads with -1 when fewer rows remain
            r, s = _ordered(rows[qi][keep], sc[qi][keep].astype(np.float64))
            per_query[qi].append(StageReport("embedding", len(cands[qi]), len(r), dt))
            cands[qi], last_scores[qi] = r, s
            kept[qi]["embedding"] = r

    if config.bm25_k is not None:
        for qi in range(nq):
            t0 = time.perf_counter()
            full = indices.bm25.scores([texts[qi]])[0]
            s, r = topk_desc(full, int(config.bm25_k), cands[qi])
            per_query[qi].append(StageReport("bm25", len(cands[qi]), len(r), time.perf_counter() - t0))
            cands[qi], last_scores[qi] = r, s.astype(np.float64)
            kept[qi]["bm25"] = r

    results: list[QueryCascade] = []
    it = tqdm(range(nq), desc="cascade re-rank", unit="query", disable=not progress or rerank is None or nq < 2)
    for qi in it:
        rows_in = cands[qi]
        if rerank is not None:
            t0 = time.perf_counter()
            s = np.asarray(rerank(qi, rows_in), dtype=np.float64)
            if s.shape != rows_in.shape:
                raise DatablameError(f"rerank returned {s.shape} scores for {len(rows_in)} rows",
                                     "return one score per candidate row, in the given order")
            ranked, ranked_s = _ordered(rows_in, s)
            per_query[qi].append(StageReport("rerank", len(rows_in), min(final_k, len(ranked)), time.perf_counter() - t0))
            kept[qi]["rerank"] = ranked[:final_k]
        elif last_scores[qi] is not None:
            ranked, ranked_s = rows_in, last_scores[qi]  # already in the last stage's order
        else:  # filter only: corpus order
            ranked, ranked_s = rows_in, np.zeros(len(rows_in))
        q = queries[qi]
        results.append(QueryCascade(qi, q.query_id, ranked[:final_k], ranked_s[:final_k], ranked, ranked_s, per_query[qi],
                                    survivors=kept[qi]))
    seconds = time.perf_counter() - t_start - index_s

    out = CascadeResult(results, n, final_k, None, _config_dict(config, final_k), seconds)
    if evaluate or reference_scores is not None:
        _evaluate(out, rerank, reference_scores, int(recall_k or final_k), progress)
    return out


def _config_dict(config: RetrievalConfig, final_k: int) -> dict[str, Any]:
    d = config.model_dump(mode="json")
    d["final_k"] = final_k
    return d


def _evaluate(result: CascadeResult, rerank: Reranker | None, reference: np.ndarray | None, k: int, progress: bool) -> None:
    """Fill each stage's recall of the exhaustive top-k (reference: rerank over every row)."""
    n = result.n_rows
    everything = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    for q in tqdm(result.queries, desc="exhaustive reference", unit="query", disable=not progress or reference is not None):
        scores = reference[q.query_index] if reference is not None else np.asarray(rerank(q.query_index, everything))
        _, q.reference_top = topk_desc(np.asarray(scores, dtype=np.float64), k)
        for stage in q.stages:
            stage.recall = _recall(q.reference_top, q.survivors[stage.name])
    result.recall_k = k
    if reference is None:
        result.reference_seconds = time.perf_counter() - t0


def run_cascade_for_inputs(
    inputs: AttributionContext,
    indices: TextIndices | None = None,
    *,
    rerank: Reranker | None = None,
    evaluate: bool = False,
    reference_scores: np.ndarray | None = None,
    progress: bool = True,
) -> CascadeResult:
    """`run_cascade` for a prepared run: `attribution.retrieval` as config, final_k =
    retrieval.final_k or attribution.top_k, the run's saved text indices
    (`<run>/index/text`, refused if stale; built in memory when absent) and, unless
    `rerank` is given, a `GradientReranker` over the run's model, modules and projection."""
    cfg = inputs.attribution.retrieval
    if indices is None and inputs.run_dir is not None and has_text_indices(text_index_dir(inputs.run_dir)):
        indices = load_text_indices(text_index_dir(inputs.run_dir), inputs.corpus,
                                    bm25=cfg.bm25_k is not None, embedding=cfg.embedding_k is not None)
    elif indices is None and (cfg.bm25_k is not None or cfg.embedding_k is not None):
        log.info("no text indices under the run; building them in memory (`datablame index` saves them)")
    if rerank is None:
        rerank = GradientReranker(inputs, batch_size=cfg.rerank_batch_size)
    return run_cascade(inputs.corpus, inputs.queries, cfg, indices, rerank,
                       final_k=cfg.final_k or inputs.attribution.top_k, evaluate=evaluate,
                       reference_scores=reference_scores, progress=progress)
