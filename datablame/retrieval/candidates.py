"""Attribution through the retrieval cascade: gradient methods rank only its candidates.

With `attribution.retrieval.enabled`, `datablame attribute` (`api.attribute`) runs the
cascade for every query (metadata filter -> MiniLM embedding search -> BM25 -> gradient
re-rank, `run_cascade_for_inputs`), and each requested method ranks only the rows that
reached the re-rank stage -- the query's *candidates*. Other rows get no rank: their score
is -inf in `scores.npz` and they never appear in `results.json`'s rankings. A candidate's
score is exactly the method's exhaustive score of that row; the cascade narrows which rows
are ranked, never what a score means. How each method gets its candidates' scores:

- `grad_cosine`: the re-rank stage itself (gradient cosine); only candidates are featurized
  (or read from the feature store of `datablame index`);
- `grad_dot`, `tracin` (a row's score depends on that row and the query only): scored on the
  union of the queries' candidates, nothing else featurized;
- `trak`, `less`, `datainf`, `ekfac`, `kfac`, `diag_influence`, `hessian_influence`,
  `kronfluence` (a kernel or curvature estimated from every row): fitted and scored over all
  rows exactly as without the cascade, then restricted to the candidates -- exact, but not
  cheaper (fitted factors are saved and reused; with the feature store rows are read, not
  featurized);
- any other method (text, representation, judge, counterfactual, random baselines) is
  refused with a DatablameError: the cascade's own text stages already rank by BM25 and
  embeddings, and the issue's contract is a gradient re-rank. Run those with the cascade off.

Stage sizes: a text stage that keeps fewer rows than the run must return
(max(final_k, attribution.top_k)) is refused before any model is loaded. A metadata filter
that keeps fewer rows is allowed (it depends on the data): those queries rank fewer rows.

Recall: each stage reports its recall of the exhaustive gradient-cosine top-`final_k`
(`CascadeResult.stage_summary`). That reference scores every row, so it is computed when it
is cheap -- the run's feature store is attached (`datablame index` ran: a read of the store
and one matrix product) -- or when asked (`evaluate=True`, which featurizes every row
without a store); otherwise recall is null and `recall_note` says why.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from datablame.config import AttributionConfig
from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.fusion_learned import load_lds_subsets
from datablame.features.gradients import GradFeatures, featurizer_for, measure_queries
from datablame.features.text_index import (
    TextIndices,
    build_text_indices,
    saved_manifest,
    text_index_dir,
)
from datablame.methods.base import Method, run_method
from datablame.models.tokenize import Encoded
from datablame.retrieval.cascade import CascadeResult, run_cascade
from datablame.retrieval.rerank import GradientReranker, _store_rows

log = logging.getLogger("datablame")

RERANK_METHOD = "grad_cosine"  # what the re-rank stage computes
ROW_SEPARABLE_METHODS = frozenset({"grad_dot", "tracin"})
CORPUS_WIDE_METHODS = frozenset({"trak", "less", "datainf", "ekfac", "kfac", "diag_influence",
                                 "hessian_influence", "kronfluence"})
GRADIENT_METHODS = frozenset({RERANK_METHOD}) | ROW_SEPARABLE_METHODS | CORPUS_WIDE_METHODS
# with the cascade on, `fused` is its fusion stage: every row a stage found, ranked by reciprocal-rank fusion
# of the embedding, BM25 and gradient re-rank stages (a lexical hit the gradient ranks low is kept)
FUSION_METHOD = "fused"
FUSED_STAGES = (("embedding", "embedding_cosine"), ("bm25", "bm25"))  # stage -> the method it ranks like


def cascade_final_k(attribution: AttributionConfig) -> int:
    """Rows the cascade returns per query: retrieval.final_k, else attribution.top_k."""
    return int(attribution.retrieval.final_k or attribution.top_k)


def check_cascade_request(attribution: AttributionConfig, methods: list[str]) -> None:
    """Refuse, before any model is loaded, what the cascade cannot do: non-gradient methods
    and text stages that keep fewer rows than the run must return."""
    refused = [m for m in methods if m not in GRADIENT_METHODS | {FUSION_METHOD}]
    if refused:
        raise DatablameError(
            f"attribution.retrieval.enabled ranks gradient methods over the cascade's candidates, and "
            f"{', '.join(refused)} {'is not one' if len(refused) == 1 else 'are not'} "
            f"(gradient methods: {sorted(GRADIENT_METHODS)}; and {FUSION_METHOD!r}, the cascade's fusion stage)",
            "drop them from attribution.methods / --method, or set attribution.retrieval.enabled: false "
            "to score them over every row",
        )
    r = attribution.retrieval
    need = max(cascade_final_k(attribution), attribution.top_k)
    for name in ("embedding_k", "bm25_k"):
        k = getattr(r, name)
        if k is not None and k < need:
            raise DatablameError(
                f"attribution.retrieval.{name} is {k}, fewer rows than the {need} the cascade must return "
                f"(final_k = {cascade_final_k(attribution)}, top_k = {attribution.top_k})",
                f"raise attribution.retrieval.{name} to at least {need} (or null to skip the stage), "
                "or lower attribution.retrieval.final_k / attribution.top_k",
            )


def run_text_indices(
    inputs: AttributionContext, *, bm25: bool = True, embedding: bool = True, progress: bool = True,
) -> tuple[TextIndices | None, dict[str, Any]]:
    """The run's BM25 / MiniLM indices under `<run>/index/text`: reused when built for this
    corpus (fingerprint) and embedding model, else built and saved. Returns (indices, info)."""
    if not (bm25 or embedding):
        return None, {}
    model = inputs.attribution.retrieval.embedding_model
    path = text_index_dir(inputs.run_dir) if inputs.run_dir is not None else None
    before = _read_manifest(path)
    t0 = time.perf_counter()
    indices = build_text_indices(inputs.corpus, path, embedding_model=model, bm25=bm25, embedding=embedding,
                                 progress=progress, reuse=True)
    info = {
        "path": None if path is None else str(path), "rows": indices.n_rows,
        "bm25": indices.bm25 is not None, "embedding_model": model if indices.embedding is not None else None,
        "reused": before is not None and indices.manifest == before,
        "build_seconds": indices.manifest.get("build_seconds", {}), "seconds": time.perf_counter() - t0,
    }
    return indices, info


def _read_manifest(path) -> dict | None:
    return saved_manifest(path)


@dataclass
class CascadeAttribution:
    """Scores [Q, n_rows] per method (-inf outside a query's candidates) and what to report."""

    scores: dict[str, np.ndarray]
    methods: list[dict[str, str]]
    timing: dict[str, float]
    cascade: CascadeResult
    report: dict[str, Any] = field(default_factory=dict)  # results.json's "retrieval"


def candidate_mask(cascade: CascadeResult) -> np.ndarray:
    """Boolean [Q, n_rows]: True where the row reached the query's re-rank stage."""
    mask = np.zeros((len(cascade.queries), cascade.n_rows), dtype=bool)
    for qi, q in enumerate(cascade.queries):
        mask[qi, q.reranked_rows] = True
    return mask


def _candidate_inputs(inputs: AttributionContext, rows: np.ndarray) -> AttributionContext:
    """The same run restricted to `rows` (sorted corpus indices): what a row-separable method
    needs to score those rows only. Features come from the full run's shared features or its
    feature store when available; no disk caches (work_dir None), so nothing of the full run is
    touched, and no store (its rows are the full corpus')."""
    enc = inputs.rows
    sub = dataclasses.replace(
        inputs,
        corpus=inputs.corpus.subset(rows.tolist(), name=f"{inputs.corpus.name}[cascade candidates]"),
        rows=Encoded([enc.input_ids[i] for i in rows], [enc.labels[i] for i in rows]),
        work_dir=None,
        store=None,
        store_row_losses=None,
        shared=inputs.shared.of_model(),
    )
    full, store = inputs.shared.grads, inputs.store
    idx = torch.as_tensor(rows)
    if full is not None:
        sub.shared.grads = GradFeatures(full.rows[idx], full.queries, full.row_losses[idx],
                                                  full.query_losses, full.shapes)
    elif store is not None:  # candidate rows are read, not featurized; queries are featurized
        feat = featurizer_for(inputs)
        q, q_loss = measure_queries(inputs, lambda enc: feat.featurize(enc, inputs.attribution.batch_size,
                                                                       inputs.tokenizer.pad_token_id or 0, desc=False))
        losses = inputs.store_row_losses
        row_losses = np.full(len(rows), np.nan, np.float32) if losses is None else losses[rows]
        sub.shared.grads = GradFeatures(torch.from_numpy(_store_rows(store, rows).astype(np.float32)), q,
                                                  torch.as_tensor(row_losses, dtype=torch.float32), q_loss, feat.shapes)
    return sub


def restrict_to_rows(inputs: AttributionContext, rows: np.ndarray) -> AttributionContext:
    """The run `inputs` restricted to `rows` (sorted corpus indices), scored as by the cascade:
    a method run on it returns scores [queries, len(rows)] (see `_candidate_inputs`)."""
    return _candidate_inputs(inputs, np.asarray(rows, dtype=np.int64))


def _restricted(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.asarray(scores, dtype=np.float64), -np.inf)


def _fused_stages(inputs: AttributionContext, method: Method, cascade: CascadeResult) -> tuple[np.ndarray, str]:
    """`fused` over the cascade: per query, the rank of each candidate in every text stage that
    ran and in the gradient re-rank, fused by reciprocal rank (`combine: rrf`) or, with
    `combine: learned`, each stage's reciprocal-rank vote 1/(c + rank) (0 where the stage did not
    rank the row) as a component weighted on the run's LDS subset models, leaving each query
    out; rows no stage found -inf. Returns the scores and how they were made."""
    per_query = []
    for q in cascade.queries:
        ranks = {}
        for stage, name in FUSED_STAGES:
            if stage in q.survivors:
                r = np.zeros(cascade.n_rows, dtype=np.int64)
                r[q.survivors[stage]] = np.arange(1, len(q.survivors[stage]) + 1)
                ranks[name] = r
        g = np.zeros(cascade.n_rows, dtype=np.int64)
        g[q.reranked_rows] = np.arange(1, len(q.reranked_rows) + 1)
        ranks[RERANK_METHOD] = g
        per_query.append(ranks)
    stages = "+".join([s for s, _ in FUSED_STAGES if s in cascade.queries[0].survivors] + ["rerank"]) \
        if cascade.queries else "rerank"
    if method.options.combine != "learned":
        return method.fuse(per_query), f"fusion stage: reciprocal-rank fusion of the {stages} ranks"
    names = list(per_query[0]) if per_query else [RERANK_METHOD]
    ranks = {m: np.stack([pq[m] for pq in per_query]) for m in names}
    votes = {m: np.where(r > 0, 1.0 / (method.options.c + np.maximum(r, 1)), 0.0) for m, r in ranks.items()}
    ids = [q.query_id for q in inputs.queries]
    masks, losses = load_lds_subsets(inputs.run_dir, inputs.corpus.fingerprint(), len(inputs.corpus), ids)
    fused = method.learn(votes, masks, losses, ids, ranks=ranks)
    found = np.any([r > 0 for r in ranks.values()], axis=0)
    return np.where(found, fused, -np.inf), (
        f"fusion stage: the {stages} reciprocal-rank votes weighted per query on {len(masks)} LDS subset models "
        "(leave-one-query-out)")


def _score_method(inputs: AttributionContext, method: Method, cascade: CascadeResult, mask: np.ndarray) -> tuple[np.ndarray, str]:
    if method.name == FUSION_METHOD:
        return _fused_stages(inputs, method, cascade)
    if method.name == RERANK_METHOD:
        return cascade.score_matrix(fill=-np.inf), "re-rank stage: candidates only"
    if method.name in ROW_SEPARABLE_METHODS:
        union = np.flatnonzero(mask.any(axis=0))
        part = run_method(_candidate_inputs(inputs, union), method).scores
        out = np.full(mask.shape, -np.inf)
        out[:, union] = part
        return np.where(mask, out, -np.inf), f"candidates only ({len(union)} rows, union over queries)"
    log.info("%s fits its curvature/kernel on every row: it is scored over all %d rows, then restricted "
             "to the cascade's candidates", method.name, mask.shape[1])
    return _restricted(run_method(inputs, method).scores, mask), "all rows, restricted to the candidates"


def _reference(inputs: AttributionContext, evaluate: bool | None) -> tuple[np.ndarray | None, str | None, float | None, Any]:
    """Exhaustive gradient cosine [Q, n_rows] for the recall report (or None and why not), its
    seconds, and the full gradient features it computed (for later exhaustive methods)."""
    if evaluate is False:
        return None, "recall not evaluated (evaluate=False)", None, None
    if evaluate is None and inputs.store is None and inputs.shared.grads is None:
        return None, ("recall needs the exhaustive gradient ranking of every row: run `datablame index` first "
                      "(rows are then read from the feature store)"), None, None
    # separate shared features, so the timed re-rank does not find the full features
    shared = inputs.shared.of_model()
    shared.grads = inputs.shared.grads
    ref_inputs = dataclasses.replace(inputs, shared=shared)
    t0 = time.perf_counter()
    ref = run_method(ref_inputs, RERANK_METHOD, {}).scores
    return ref, None, time.perf_counter() - t0, ref_inputs.shared.grads


def attribute_with_cascade(
    inputs: AttributionContext, methods: list[Method], *, indices: TextIndices | None = None,
    index_info: dict[str, Any] | None = None, evaluate: bool | None = None, progress: bool = True,
) -> CascadeAttribution:
    """Run the cascade for every query and score `methods` over its candidates (see the module
    docstring). `indices`: the run's text indices (`run_text_indices`); `evaluate`: the
    per-stage recall (None = when the feature store makes it cheap)."""
    check_cascade_request(inputs.attribution, [m.name for m in methods])
    reference, note, ref_s, full_features = _reference(inputs, evaluate)
    r = inputs.attribution.retrieval
    timing: dict[str, float] = {}
    if r.embedding_k is not None:  # a one-time model load is not a per-query stage cost
        from datablame.models.embedder import load_embedder

        t = time.perf_counter()
        load_embedder(r.embedding_model, None)
        timing["embedder_load_s"] = time.perf_counter() - t
    # run_cascade, not run_cascade_for_inputs: the indices are given (or not needed), never reloaded here
    cascade = run_cascade(inputs.corpus, inputs.queries, r, indices, GradientReranker(inputs, batch_size=r.rerank_batch_size),
                          final_k=cascade_final_k(inputs.attribution), reference_scores=reference, progress=progress)
    if full_features is not None:  # already paid for: exhaustive and row-separable methods reuse them
        if inputs.shared.grads is None:
            inputs.shared.grads = full_features
    timing["cascade_s"] = cascade.seconds
    mask = candidate_mask(cascade)
    scores, described, how = {}, [], {}
    for m in methods:
        t = time.perf_counter()
        scores[m.name], how[m.name] = _score_method(inputs, m, cascade, mask)
        timing[f"{m.name}_s"] = time.perf_counter() - t  # grad_cosine: its work is the re-rank, in cascade_s
        described.append({**m.describe(), "ranked_over": "retrieval cascade candidates", "scored": how[m.name]})
    short = [q.query_id for q in cascade.queries if len(q.reranked_rows) < cascade.final_k]
    if short:
        log.warning("the cascade kept fewer than %d rows for queries %s (the metadata filter keeps too few rows)",
                    cascade.final_k, short[:5])
    report = cascade.to_dict(inputs.corpus.row_ids)
    report.update({
        "candidates": "rows reaching the re-rank stage; methods rank only these, other rows get no rank",
        "recall_of": None if reference is None else f"exhaustive {RERANK_METHOD} top-{cascade.recall_k}",
        "recall_note": note, "reference_seconds": ref_s, "method_scoring": how,
        "text_indices": index_info or None,
    })
    return CascadeAttribution(scores, described, timing, cascade, report)


def drop_unranked(result: Any) -> None:
    """Remove rows without a rank (score -inf: not a cascade candidate) from an
    AttributionResult's rankings, so a query with few candidates lists only those."""
    for q in result.queries:
        for name, rows in q.rankings.items():
            q.rankings[name] = [r for r in rows if np.isfinite(r.score)]
