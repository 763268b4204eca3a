"""The cascade's last stage: gradient-cosine re-rank of a few candidate rows.

`GradientReranker(inputs)` is the default `rerank(query_index, candidate_rows) -> scores`:
it featurizes only the candidate rows (hook-based projected gradients, the run's
`attribution.modules` and `attribution.projection`, via `datablame.grads`) and returns the
cosine of each with the query's feature -- exactly what `grad_cosine` gives those rows over
the full corpus, so the re-ranked order is the exhaustive order restricted to the
candidates. Row features are kept once computed, so rows shared by several queries'
candidate sets are featurized once. When the run's full gradient features are already
cached (`gradient_features(inputs)` ran), they are used and nothing is featurized; when the
run's feature store is attached (`inputs.store`, from `datablame index`),
candidate rows are read from it (fp16 on disk: cosines within ~1e-3 of fresh features).

Sign and unit: higher = the row's loss gradient points more nearly the same way as the
query's (pushes its loss down); cosine, unitless in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from datablame.features.context import AttributionContext
from datablame.features.gradients import featurizer_for, measure_queries
from datablame.models.tokenize import Encoded

# rerank(query index, candidate row indices [C] int64) -> scores [C] (higher = more responsible)
Reranker = Callable[[int, np.ndarray], np.ndarray]


class GradientReranker:
    """Gradient cosine of candidate rows with one query, featurizing candidates on demand."""

    def __init__(self, inputs: AttributionContext, *, batch_size: int | None = None, keep_rows: bool = True) -> None:
        self.inputs = inputs
        self.batch_size = batch_size or inputs.attribution.batch_size
        self.keep_rows = keep_rows
        self._rows: dict[int, torch.Tensor] = {}  # row index -> unit-norm feature (float64)
        self._queries: torch.Tensor | None = None
        self.rows_featurized = 0  # how many row featurizations this reranker ran

    @property
    def _pad(self) -> int:
        return self.inputs.tokenizer.pad_token_id or 0

    def _full(self):
        return self.inputs.shared.grads

    def query_features(self) -> torch.Tensor:
        """Unit-norm query features [Q, D] float64 (featurized once)."""
        if self._queries is None:
            full = self._full()
            if full is not None:
                q = full.queries
            else:
                feat = featurizer_for(self.inputs)
                q, _ = measure_queries(self.inputs, lambda enc: feat.featurize(enc, self.batch_size, self._pad, desc=False))
            self._queries = torch.nn.functional.normalize(q.double(), dim=1)
        return self._queries

    def row_features(self, rows: np.ndarray) -> torch.Tensor:
        """Unit-norm features [len(rows), D] float64 of the given rows."""
        full = self._full()
        if full is not None:
            return torch.nn.functional.normalize(full.rows[torch.as_tensor(rows)].double(), dim=1)
        store = self.inputs.store
        if store is not None:
            return torch.nn.functional.normalize(torch.from_numpy(_store_rows(store, rows)), dim=1)
        missing = sorted({int(r) for r in rows if int(r) not in self._rows})
        if missing:
            enc = self.inputs.rows
            # rows never interact, so sorting them by length changes no value, only cuts padding
            missing.sort(key=lambda r: (len(enc.input_ids[r]), r))
            part = Encoded([enc.input_ids[r] for r in missing], [enc.labels[r] for r in missing])
            f, _ = featurizer_for(self.inputs).featurize(part, self.batch_size, self._pad, desc=False)
            f = torch.nn.functional.normalize(f.double(), dim=1)
            self.rows_featurized += len(missing)
            got = dict(zip(missing, f, strict=True))
            if self.keep_rows:
                self._rows.update(got)
        else:
            got = {}
        return torch.stack([self._rows[int(r)] if int(r) in self._rows else got[int(r)] for r in rows])

    def __call__(self, query_index: int, candidates: np.ndarray) -> np.ndarray:
        candidates = np.asarray(candidates, dtype=np.int64)
        if len(candidates) == 0:
            return np.zeros(0)
        q = self.query_features()[query_index]
        return (self.row_features(candidates) @ q).numpy()


def _store_rows(store, rows: np.ndarray) -> np.ndarray:
    """Rows [len(rows), dim] float64 of a FeatureStore, in the given order (memory-mapped shards)."""
    out = np.empty((len(rows), store.dim), dtype=np.float64)
    for start, arr, _ in store.iter_shards():
        hit = np.flatnonzero((rows >= start) & (rows < start + arr.shape[0]))
        if len(hit):
            out[hit] = arr[rows[hit] - start]
    return out
