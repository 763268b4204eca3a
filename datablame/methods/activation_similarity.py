"""Activation similarity (seed 004): cosine of pooled hidden states at one decoder layer,
plus KMeans grouping of each query's top candidates with every cluster's top terms.

    score[q, r] = cos( pool(h_l(query q)), pool(h_l(row r)) )

Unit: cosine similarity, unitless in [-1, 1]. Sign: higher = the row puts the model in a
more similar internal state than the query's, read as "more responsible" (seed 004's
intuition: rows producing similar representations teach similar behaviour). It is a
similarity, not a loss change: it cannot tell a row that taught the output from one that
merely reads like it.

Options (`attribution.options.activation_similarity`):
- `layer`: decoder layer (int, negative from the end; default the middle one, n // 2);
- `pooling`: "mean" (default) or "last"; `span`: "answer" (default) or "all" tokens
  (see `hidden_states`);
- `center`: subtract the mean training-row vector before the cosine (default false;
  hidden states share a large common direction, which compresses all cosines towards 1);
- `clusters`: KMeans k for the grouping (default 5; 0 turns it off), `cluster_top`:
  candidates per query to group (default 50), `cluster_terms`: terms per cluster (8).

The grouping is written to `<work_dir>/activation_similarity/clusters.json`: per query,
clusters of its top candidates (KMeans on the unit-normalised pooled vectors, seeded), each
with its rows (best first), size, mean score and top terms (highest mean TF-IDF over the
cluster's row texts, TF-IDF fitted on the candidates' texts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field, StrictBool

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.hidden_states import (
    POOLINGS,
    SPANS,
    attributed_layer_features,
    decoder_layers,
    resolve_layers,
)
from datablame.layout import AttributionLayout
from datablame.methods.base import Method, MethodOptions, register
from datablame.utils.io import atomic_write_json

log = logging.getLogger("datablame")


def cluster_candidates(
    vectors: np.ndarray, texts: Sequence[str], scores: np.ndarray, row_ids: Sequence[str], *,
    n_clusters: int, n_terms: int = 8, seed: int = 0,
) -> list[dict]:
    """KMeans groups of candidate rows (vectors [N, d]) with each group's top TF-IDF terms.

    Clusters are ordered by their best row's score; rows inside a cluster best first.
    """
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(vectors)
    if n == 0:
        return []
    k = max(1, min(n_clusters, n))
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x) if k > 1 else np.zeros(n, int)
    try:
        tfidf = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b", stop_words="english")
        weights = tfidf.fit_transform(list(texts))
        vocab = np.asarray(tfidf.get_feature_names_out())
    except ValueError:  # no word in any text (only numbers or symbols)
        weights, vocab = None, np.asarray([])
    groups = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(-scores[members], kind="stable")]
        terms: list[str] = []
        if weights is not None and len(members):
            mean_w = np.asarray(weights[members].mean(axis=0)).ravel()
            top = [int(j) for j in np.argsort(-mean_w, kind="stable")[:n_terms] if mean_w[j] > 0]
            terms = vocab[top].tolist()
        groups.append({
            "size": len(members),
            "best_score": float(scores[members[0]]) if len(members) else float("-inf"),
            "mean_score": float(scores[members].mean()) if len(members) else float("nan"),
            "top_terms": terms,
            "rows": [row_ids[i] for i in members],
        })
    groups.sort(key=lambda g: -g["best_score"])
    return groups


@register
class ActivationSimilarity(Method):
    name = "activation_similarity"
    family = "representation"
    unit = "cosine similarity of pooled hidden states at one layer, unitless in [-1, 1]"
    cost = "one forward per row (no backward)"

    class Options(MethodOptions):
        layer: int | str | None = Field(None, description="decoder layer (negative from the end; null = the "
                                        "middle one, n // 2)")
        pooling: Literal[POOLINGS] = Field("mean", description="pool token vectors by their mean or the last token")
        span: Literal[SPANS] = Field("answer", description="tokens pooled: the answer's or all")
        center: StrictBool = Field(False, description="subtract the mean training-row vector before the cosine")
        clusters: int = Field(5, ge=0, description="KMeans k for grouping each query's top candidates (0 = off)")
        cluster_top: int = Field(50, ge=1, description="candidates per query to group")
        cluster_terms: int = Field(8, ge=1, description="top TF-IDF terms reported per cluster")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.layer, self.pooling, self.span, self.center = o.layer, o.pooling, o.span, o.center
        self.n_clusters, self.cluster_top, self.cluster_terms = o.clusters, o.cluster_top, o.cluster_terms
        self.clusters: list[dict] = []

    def _layer(self, ctx: AttributionContext) -> int:
        layers = resolve_layers(self.layer, len(decoder_layers(ctx.model)), self.name)
        if len(layers) != 1:
            raise DatablameError(f"{self.name}: layer={self.layer!r} names {len(layers)} layers", "give one layer")
        return layers[0]

    def vectors(self, ctx: AttributionContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled hidden states (rows [R, d], queries [Q, d]) as scored (centered if asked)."""
        rows, queries = attributed_layer_features(
            ctx, [self._layer(ctx)], pooling=self.pooling, span=self.span, grads=False
        )
        r, q = rows.h[:, 0].double(), queries.h[:, 0].double()
        if self.center:
            mu = r.mean(dim=0, keepdim=True)
            r, q = r - mu, q - mu
        return r, q

    def score(self, ctx: AttributionContext) -> np.ndarray:
        r, q = self.vectors(ctx)
        scores = (torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(r, dim=1).T).numpy()
        if self.n_clusters:
            self.clusters = self.group(ctx, scores, r.numpy())
            if ctx.work_dir is not None:
                out = AttributionLayout(ctx.work_dir).cache_dir(self.name) / "clusters.json"
                atomic_write_json(out, {
                    "layer": self._layer(ctx), "pooling": self.pooling, "span": self.span,
                    "center": self.center, "queries": self.clusters,
                })
                log.info("activation clusters written to %s", out)
        return scores

    def group(self, ctx: AttributionContext, scores: np.ndarray, row_vectors: np.ndarray) -> list[dict]:
        """Per query: KMeans groups of its top `cluster_top` candidates."""
        out = []
        ids = ctx.corpus.row_ids
        for qi, query in enumerate(ctx.queries):
            top = np.argsort(-scores[qi], kind="stable")[: self.cluster_top]
            groups = cluster_candidates(
                row_vectors[top], [ctx.corpus[i].text for i in top], scores[qi, top], [ids[i] for i in top],
                n_clusters=self.n_clusters, n_terms=self.cluster_terms,
            )
            out.append({"query_id": query.query_id, "prompt": query.prompt, "clusters": groups})
        return out
