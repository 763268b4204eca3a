"""The attribution context: what every method of one run sees, and what they share.

`AttributionContext` is built once per run by `datablame.ctx.prepare_inputs` (or by hand in
tests). It holds the run's model, tokenizer, corpus and encoded rows and queries, and three
typed parts:

- `model_info` and `identity`: where the model came from, its weight fingerprint, and the
  `FeatureIdentity` (model, data, modules, projection, tokenisation) from which the feature
  store check, the curvature factors' identity and the checkpoint-feature cache keys all derive;
- `store` (+ `store_row_losses`): the run's feature store from `datablame index`, opened,
  identity-checked and hash-verified, or None;
- `shared`: features computed lazily by the first method that asks and reused by the others
  (gradient features, hidden states, text indices, curvature, another method's scores). Each
  kind has its own typed field; `fresh()` gives a context with none of them (the benchmark
  times each method paying its own way).

Methods ask through the functions of `datablame.features` (`gradient_features(ctx)`,
`attributed_layer_features(ctx, ...)`, `bm25_index_for(ctx)`, `fit_preconditioner(ctx, ...)`)
or the shortcuts below (`ctx.grads()`, `ctx.bm25()`, ...); none writes free-form state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from datablame.config import AttributionConfig, ModelConfig, TrainingConfig
from datablame.data.corpus import Corpus, Query
from datablame.models.tokenize import Encoded
from datablame.utils.io import sha256_strings

if TYPE_CHECKING:  # the feature modules import this one
    import numpy as np
    import torch

    from datablame.curvature import Preconditioner
    from datablame.features.checkpoints import CheckpointInfo
    from datablame.features.gradients import GradFeatures
    from datablame.features.text_index import BM25Index, EmbeddingIndex
    from datablame.grads import GradientFeaturizer
    from datablame.models.queries import QueryMeasure
    from datablame.store import FeatureStore


@dataclass(frozen=True)
class ModelInfo:
    """Where the attributed model came from and its weight fingerprint (None: not known, e.g. a
    model built in memory; nothing derived from it is then cached on disk)."""

    source: str = "in memory"
    fingerprint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class FeatureIdentity:
    """Everything saved gradient features depend on: the model's weights, the data, the selected
    modules and their projected shapes, the projection and the tokenisation. The store's
    identity, the curvature factors' identity and the checkpoint-feature cache key are views of
    it (their formats are those already on disk, so saved artifacts stay valid)."""

    model: str | None
    data: str
    shapes: tuple[tuple[str, int, int], ...]
    projection: dict[str, Any]
    max_length: int
    loss_on: str
    rows: int

    def with_model(self, fingerprint: str | None) -> FeatureIdentity:
        """The same identity for another model's weights (a checkpoint of the run)."""
        return dataclasses.replace(self, model=fingerprint)

    def _modules_hash(self) -> str:
        return sha256_strings(f"{n}:{o}x{i}" for n, o, i in self.shapes)

    def store(self) -> dict[str, Any]:
        """What must match for stored row features to stand in for freshly computed ones."""
        return {"model": self.model, "data": self.data, "modules": self._modules_hash(),
                "projection": self.projection, "max_length": self.max_length, "loss_on": self.loss_on}

    def curvature(self, *, kind: str, fisher: str, fit_rows: int | None, seed: int, format: int) -> dict[str, Any]:
        """What must match for saved curvature factors to stand in for freshly fitted ones."""
        return {"format": format, "kind": kind, **self.store(), "fisher": fisher, "fit_rows": fit_rows, "seed": seed}

    def feature_key(self) -> str:
        """16-hex key of saved per-checkpoint row features (file names under the cache)."""
        payload = {"weights": self.model, "data": self.data, "modules": [list(s) for s in self.shapes],
                   "projection": self.projection, "max_length": self.max_length, "loss_on": self.loss_on,
                   "rows": self.rows}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SharedFeatures:
    """Features the methods of one run compute once and share; one typed field per kind."""

    # the attributed model's gradient featurizer and its selected module names
    featurizer: GradientFeaturizer | None = None
    grad_modules: list[str] | None = None
    # projected row and query gradients at the attributed model (`gradient_features`)
    grads: GradFeatures | None = None
    # the same at other weights: by feature key, by checkpoint path, by extra model path (trak)
    grads_by_key: dict[str, GradFeatures] = field(default_factory=dict)
    grads_by_checkpoint: dict[str, GradFeatures] = field(default_factory=dict)
    grads_by_model: dict[str, GradFeatures] = field(default_factory=dict)
    adam_grads_by_checkpoint: dict[str, torch.Tensor] = field(default_factory=dict)  # LESS
    checkpoint_schedule: list[CheckpointInfo] | None = None
    # hidden states / activation gradients per (layers, pooling, span, grads)
    hidden: dict[tuple, tuple[Any, Any]] = field(default_factory=dict)
    # cross-checkpoint: loaded models by path, pair features by (pair, layers, setting)
    checkpoint_models: dict[str, tuple[nn.Module, Any, str]] = field(default_factory=dict)
    pair_features: dict[tuple, tuple[Any, Any]] = field(default_factory=dict)
    # text indices by parameters (BM25 k1/b, embedding model)
    bm25: dict[tuple[float, float], BM25Index] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingIndex] = field(default_factory=dict)
    # curvature: the covariance pass by fitting identity, fitted preconditioners by identity
    curvature_passes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    preconditioners: dict[str, Preconditioner] = field(default_factory=dict)
    # another method's scores [Q, R] by (method, options) (a judge's candidates, a reference)
    method_scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    # the training rows' gradient features and losses alone (no store), reusable for other queries
    row_grads: tuple[Any, Any] | None = None

    def of_model(self) -> SharedFeatures:
        """Only what depends on the model alone (featurizer, modules, checkpoint schedule): what
        a view of the same run over other rows or with separately timed features may share."""
        return SharedFeatures(featurizer=self.featurizer, grad_modules=self.grad_modules,
                              checkpoint_schedule=self.checkpoint_schedule)

    def for_new_queries(self) -> SharedFeatures:
        """Everything that depends on the model and the training rows but not on the queries, for
        the same run asked other queries (`datablame serve`): the row gradients, text indices,
        curvature and loaded checkpoints. The dicts are the same objects, so what one query adds
        the next finds; anything holding query features (grads, hidden, method scores) starts empty."""
        return SharedFeatures(featurizer=self.featurizer, grad_modules=self.grad_modules,
                              checkpoint_schedule=self.checkpoint_schedule, bm25=self.bm25,
                              embeddings=self.embeddings, curvature_passes=self.curvature_passes,
                              preconditioners=self.preconditioners, checkpoint_models=self.checkpoint_models,
                              row_grads=self.row_grads)


@dataclass
class AttributionContext:
    """Everything a method may use. Rows and queries are already encoded with the training
    template and loss mask, so every method sees exactly what the model was trained on."""

    model: nn.Module
    tokenizer: Any
    corpus: Corpus
    rows: Encoded
    queries: list[Query]
    query_rows: Encoded
    attribution: AttributionConfig
    model_cfg: ModelConfig
    work_dir: Path | None = None  # where `fit` may save what it precomputes
    # Trainer checkpoints of this run in step order (TracIn, TRAK ensembles, cross-checkpoint),
    # and the model before fine-tuning when it was saved (tiny models: <run>/model/base).
    checkpoints: list[Path] = field(default_factory=list)
    base_model: Path | None = None
    run_dir: Path | None = None
    # the config the checkpoints were trained with: their learning-rate schedule is rebuilt
    # from it (features.checkpoints.checkpoint_schedule), never from a pickle in the run dir
    training: TrainingConfig | None = None
    model_info: ModelInfo = field(default_factory=ModelInfo)
    generated: list[bool] = field(default_factory=list)  # per query: completion generated by the model
    store: FeatureStore | None = None  # the run's feature store (`datablame index`), checked
    store_row_losses: np.ndarray | None = None  # per-row losses saved with the store (NaN where absent)
    shared: SharedFeatures = field(default_factory=SharedFeatures)
    # behaviour-level queries: how each query's loss is measured over its member completions
    # (None: every query is its one completion string, `query_rows`); see features.gradients.measure_queries
    query_measure: QueryMeasure | None = None

    @property
    def fingerprint(self) -> str | None:
        """The attributed model's weight fingerprint (None when unknown)."""
        return self.model_info.fingerprint

    def identity(self, model_fingerprint: str | None = None) -> FeatureIdentity:
        """The feature identity of this run at the attributed model (or at other weights)."""
        from datablame.features.gradients import featurizer_for

        fp = self.fingerprint if model_fingerprint is None else model_fingerprint
        return FeatureIdentity(
            model=fp, data=self.corpus.fingerprint(), shapes=tuple(featurizer_for(self).shapes),
            projection={**self.attribution.projection.model_dump(mode="json"),  # a store of other precision differs
                        **({"featurize_dtype": d} if (d := self.attribution.featurize_dtype) != "model" else {})},
            max_length=self.model_cfg.max_length, loss_on=self.model_cfg.loss_on, rows=len(self.rows),
        )

    def fresh(self) -> AttributionContext:
        """This context without any shared features (each method then computes its own)."""
        return dataclasses.replace(self, shared=SharedFeatures())

    # shortcuts to the shared features (each computed on first use)
    def grads(self) -> GradFeatures:
        from datablame.features.gradients import gradient_features

        return gradient_features(self)

    def checkpoint_grads(self, checkpoint: CheckpointInfo | Path) -> GradFeatures:
        from datablame.features.checkpoints import checkpoint_features

        return checkpoint_features(self, checkpoint)

    def hidden(self, layers: list[int], *, pooling: str = "mean", span: str = "answer", grads: bool = False):
        from datablame.features.hidden_states import attributed_layer_features

        return attributed_layer_features(self, layers, pooling=pooling, span=span, grads=grads)

    def bm25(self, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        from datablame.features.text_index import bm25_index_for

        return bm25_index_for(self, k1=k1, b=b)

    def embeddings(self, model: str | None = None) -> EmbeddingIndex:
        from datablame.features.text_index import embedding_index_for

        return embedding_index_for(self) if model is None else embedding_index_for(self, model=model)

    def preconditioner(self, kind: str, **options: Any) -> Preconditioner:
        from datablame.features.preconditioner import fit_preconditioner

        return fit_preconditioner(self, kind, **options)
