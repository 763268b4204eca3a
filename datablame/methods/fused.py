"""Evidence fusion: reciprocal-rank fusion of lexical, semantic and gradient evidence.

    fused[q, r] = sum_m w_m / (c + rank_m(q, r))       (rank 1 = the method's best row)

over the component methods (default `bm25`, `embedding_cosine`, `grad_cosine`), each scored
once per run and shared with the other methods (`scores_of`). A row that several kinds of
evidence rank high beats one that a single kind ranks high, so a row restating the query
(found by BM25 and embeddings) is kept even when the gradient ranking puts it lower, and a
row only gradients find still counts. Each blamed row carries its evidence: its rank under
every component, which components put it in their top `evidence_top`, and, for lexical hits,
the longest run of words it shares with the query (`datablame.features.fusion`).

Sign: higher = more (and higher-weighted) kinds of evidence rank the row near the top.
Unit: reciprocal-rank-fusion score, sum of w / (c + rank), in (0, sum w / (c + 1)].

`combine: learned` (when `datablame lds` results for the run exist) replaces the reciprocal
ranks by a weighted sum of the components' per-query z-scores, the weights fitted per query
on the LDS subset models leaving that query out (`datablame.features.fusion_learned`); the
fitted weights are in `fitted` (query id -> component -> weight) and in each row's evidence.
Unit then: weighted sum of z-scores (standard deviations over the rows). As the retrieval
cascade's fusion stage, the components are the stages' reciprocal-rank votes 1/(c + rank)
(0 where a stage did not rank the row), weighted the same way
(`datablame.retrieval.candidates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.fusion import RRF_C, ranks_desc, reciprocal_rank_fusion, row_evidence
from datablame.features.fusion_learned import fit_loo_weights, load_lds_subsets, zscore_rows
from datablame.methods.base import REGISTRY, Method, MethodOptions, register, scores_of


@register
class Fused(Method):
    name = "fused"
    family = "fusion"
    sign = "higher = more kinds of evidence (lexical, semantic, gradient) rank the row near the top"
    unit = "reciprocal-rank-fusion score: sum over components of w / (c + rank), rank 1 = best"
    cost = "the sum of its components' costs (each scored once per run, shared with the other methods)"

    class Options(MethodOptions):
        methods: list[str] = Field(["bm25", "embedding_cosine", "grad_cosine"], min_length=1,
                                   description="component methods whose rankings are fused")
        weights: dict[str, float] | None = Field(None, description="weight per component (default 1 each)")
        c: float = Field(RRF_C, gt=0, description="rank constant: larger flattens the weight of the top ranks")
        evidence_top: int = Field(10, ge=1, description="a component 'found' a row when it ranked it this high")
        combine: Literal["rrf", "learned"] = Field(
            "rrf", description="rrf: reciprocal-rank fusion; learned: z-score weights fitted per query on the "
                               "run's LDS subset models, leaving the query out (needs `datablame lds` first)")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        bad = [m for m in o.methods if m not in REGISTRY or m == self.name]
        if bad:
            raise DatablameError(f"attribution.options.fused.methods: {bad} cannot be fused",
                                 f"name registered methods other than fused: {sorted(set(REGISTRY) - {self.name})}")
        if o.weights and (unknown := sorted(set(o.weights) - set(o.methods))):
            raise DatablameError(f"attribution.options.fused.weights names {unknown}, not among its methods",
                                 "give weights only for the methods in attribution.options.fused.methods")
        if o.weights and o.combine == "learned":
            raise DatablameError("attribution.options.fused.weights is set with combine: learned, which fits them",
                                 "drop weights, or use combine: rrf")
        self._ranks: dict[str, np.ndarray] = {}
        self.fitted: dict[str, dict[str, float]] = {}  # combine: learned -> query id -> component -> weight
        self.subsets: int | None = None

    def score(self, ctx: AttributionContext) -> np.ndarray:
        comps = {m: scores_of(ctx, m, by=self.name) for m in self.options.methods}
        if self.options.combine == "rrf":
            return self.fuse([{m: ranks_desc(s[qi]) for m, s in comps.items()} for qi in range(len(ctx.queries))])
        ids = [q.query_id for q in ctx.queries]
        masks, losses = load_lds_subsets(ctx.run_dir, ctx.corpus.fingerprint(), len(ctx.corpus), ids)
        return self.learn(comps, masks, losses, ids)

    def learn(self, comps: dict[str, np.ndarray], masks: np.ndarray, losses: np.ndarray,
              query_ids: Sequence[str], ranks: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Scores [Q, N] = per query sum_m w_m z_m, the weights fitted leaving the query out
        (masks [M, N], losses [M, Q] of the LDS subset models, queries in `query_ids` order).
        `ranks` (component -> [Q, N], 0 = unranked) are kept for `evidence` instead of the
        components' own score ranks (the retrieval cascade passes its stages' ranks)."""
        if len(query_ids) < 2:
            raise DatablameError("fused combine: learned needs at least 2 queries (weights are fitted on the others)",
                                 "attribute several queries at once, or use attribution.options.fused.combine: rrf")
        names = list(comps)
        z = [zscore_rows(comps[m]) for m in names]
        w = fit_loo_weights(z, masks, losses)  # [Q, K]
        self._ranks = ranks if ranks is not None else {m: np.stack([ranks_desc(row) for row in comps[m]]) for m in names}
        self.fitted = {q: {m: round(float(w[qi, k]), 6) for k, m in enumerate(names)} for qi, q in enumerate(query_ids)}
        self.subsets = len(masks)
        return np.einsum("qk,kqn->qn", w, np.stack(z))

    def fuse(self, ranks: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """Scores [Q, R] from each query's component ranks (1 = best, 0 = not ranked: the
        retrieval cascade passes its stages' ranks over its candidates); a row no component
        ranked scores -inf. Keeps the ranks for `evidence`."""
        names = list(ranks[0]) if ranks else list(self.options.methods)
        n = len(next(iter(ranks[0].values()))) if ranks else 0
        self._ranks = {m: np.zeros((len(ranks), n), dtype=np.int64) for m in names}
        out = np.full((len(ranks), n), -np.inf)
        for qi, per in enumerate(ranks):
            for m, r in per.items():
                self._ranks[m][qi] = r
            ranked = np.any([r > 0 for r in per.values()], axis=0)
            out[qi, ranked] = reciprocal_rank_fusion(per, self.options.weights, self.options.c)[ranked]
        return out

    def evidence(self, ctx: AttributionContext, query_index: int, rows: Sequence[int]) -> list[dict[str, Any]] | None:
        if not self._ranks:
            return None
        q = ctx.queries[query_index]
        ranks = {m: r[query_index] for m, r in self._ranks.items()}
        lexical = [m for m in self._ranks if REGISTRY[m].family in ("lexical", "semantic")]
        query_text = f"{q.prompt} {q.completion or ''}"
        out = [row_evidence(ranks, int(i), top=self.options.evidence_top, query_text=query_text,
                            row_text=f"{ctx.corpus[int(i)].prompt} {ctx.corpus[int(i)].completion}", lexical=lexical)
               for i in rows]
        if q.query_id in self.fitted:
            for ev in out:
                ev["weights"] = dict(self.fitted[q.query_id])
        return out

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d["components"] = ", ".join(self.options.methods)
        if self.options.combine == "learned":
            d["unit"] = "weighted sum of the components' per-query z-scores (weights fitted leaving the query out)"
            d["combine"] = f"learned on {self.subsets} LDS subset models, leave-one-query-out"
        return d
