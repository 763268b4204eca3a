"""The method protocol and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from datablame.config import AttributionConfig, ModelConfig, TrainingConfig
from datablame.data.corpus import Corpus, Query
from datablame.errors import DatablameError
from datablame.models.tokenize import Encoded


@dataclass
class AttributionInputs:
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
    # from it (checkpoint_features.checkpoint_schedule), never from a pickle in the run dir
    training: TrainingConfig | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # shared between methods of one run


class Method(ABC):
    name: ClassVar[str]
    sign: ClassVar[str] = "higher = the row pushed the query's loss down"
    unit: ClassVar[str]
    cost: ClassVar[str]

    def fit(self, inputs: AttributionInputs) -> None:  # noqa: B027 - optional hook
        """Precompute what `score` needs (features, factors). Default: nothing."""

    @abstractmethod
    def score(self, inputs: AttributionInputs) -> np.ndarray:
        """Scores [n_queries, n_rows] (float64)."""

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "sign": self.sign, "unit": self.unit, "cost": self.cost}


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls


def get_method(name: str, **options: Any) -> Method:
    """An instance of a registered method; `options` come from `attribution.options.<name>`."""
    if name not in REGISTRY:
        raise DatablameError(
            f"unknown attribution method {name!r}", f"choose one of {sorted(REGISTRY)}"
        )
    cls = REGISTRY[name]
    try:
        return cls(**options)
    except TypeError as err:
        raise DatablameError(
            f"bad options for method {name!r}: {err}",
            f"fix attribution.options.{name} (see the docstring of {cls.__module__})",
        ) from None
