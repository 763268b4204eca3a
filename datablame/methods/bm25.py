"""BM25 baseline (bm25s): lexical overlap between the query and each training row.

Query text = prompt + completion; row text = the row's prompt + completion (`Row.text`).
Tokens: lower-cased words of >= 2 characters, English stop words removed, no stemming
(see `datablame.features.text_index`).

Sign: higher = the row shares more, and rarer, words with the query (more responsible by
this baseline's reckoning); it never looks at the model, so it cannot tell a row that
taught the behaviour from one that merely repeats its words (the planted corpus' decoys).
Unit: Lucene BM25 score (k1=1.5, b=0.75): sum over query terms of idf x saturated term
frequency; >= 0, unbounded, 0 when no term is shared. Scores of different queries are not
on a common scale.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from datablame.features.context import AttributionContext
from datablame.features.text_index import bm25_index_for, query_texts
from datablame.methods.base import Method, MethodOptions, register


@register
class BM25(Method):
    name = "bm25"
    family = "lexical"
    sign = "higher = the row shares more (and rarer) words with the query's prompt + completion"
    unit = "Lucene BM25 score (k1, b as configured), >= 0, unbounded"
    cost = "no model: one sparse index over the rows' words; milliseconds per query"

    class Options(MethodOptions):
        k1: float = Field(1.5, description="BM25 term-frequency saturation")
        b: float = Field(0.75, description="BM25 document-length normalisation (0 = none, 1 = full)")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.k1, self.b = self.options.k1, self.options.b

    def fit(self, ctx: AttributionContext) -> None:
        bm25_index_for(ctx, k1=self.k1, b=self.b)

    def score(self, ctx: AttributionContext) -> np.ndarray:
        index = bm25_index_for(ctx, k1=self.k1, b=self.b)
        return index.scores(query_texts(ctx.queries)).astype(np.float64)
