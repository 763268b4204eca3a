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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.fusion import RRF_C, ranks_desc, reciprocal_rank_fusion, row_evidence
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
        self._ranks: dict[str, np.ndarray] = {}

    def score(self, ctx: AttributionContext) -> np.ndarray:
        comps = {m: scores_of(ctx, m, by=self.name) for m in self.options.methods}
        return self.fuse([{m: ranks_desc(s[qi]) for m, s in comps.items()} for qi in range(len(ctx.queries))])

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
        return [row_evidence(ranks, int(i), top=self.options.evidence_top, query_text=query_text,
                             row_text=f"{ctx.corpus[int(i)].prompt} {ctx.corpus[int(i)].completion}", lexical=lexical)
                for i in rows]

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d["components"] = ", ".join(self.options.methods)
        return d
