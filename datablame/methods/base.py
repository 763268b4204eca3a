"""The method protocol and registry."""

from __future__ import annotations

import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
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


FAMILIES = ("gradient", "influence", "representation", "lexical", "semantic", "judge", "counterfactual", "baseline")


class MethodOptions(BaseModel):
    """A method's options (`attribution.options.<name>`): typed fields with defaults and a
    one-line description each; an unknown option is an error. A method without options keeps
    this empty model; one with options declares `class Options(MethodOptions)` (or extends
    its base class's `Options`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Method(ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # one of FAMILIES
    sign: ClassVar[str] = "higher = the row pushed the query's loss down"
    unit: ClassVar[str]
    cost: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions

    def __init__(self, **options: Any) -> None:
        """Validates `options` against `Options` (DatablameError naming method and option)."""
        self.options = method_options(type(self), options)

    def fit(self, inputs: AttributionInputs) -> None:  # noqa: B027 - optional hook
        """Precompute what `score` needs (features, factors). Default: nothing."""

    @abstractmethod
    def score(self, inputs: AttributionInputs) -> np.ndarray:
        """Scores [n_queries, n_rows] (float64)."""

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "sign": self.sign, "unit": self.unit, "cost": self.cost}


def check_scores_shape(name: str, scores: Any, n_queries: int, n_rows: int) -> None:
    """`scores` checked to be an array [n_queries, n_rows]: a method returning
    anything else (per-token scores, transposed, a row short) is an error naming it."""
    shape = getattr(scores, "shape", None)
    if shape is None or tuple(shape) != (n_queries, n_rows):
        raise DatablameError(
            f"method {name!r} returned scores of shape {None if shape is None else tuple(shape)}, "
            f"expected (queries, rows) = ({n_queries}, {n_rows})",
            f"this is a bug in method {name!r}; run other methods meanwhile",
        )


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if getattr(cls, "family", None) not in FAMILIES:
        raise TypeError(f"method {cls.__name__} needs a `family`, one of {FAMILIES}")
    REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise DatablameError(
            f"unknown attribution method {name!r}", f"choose one of {sorted(REGISTRY)} (`datablame methods` lists them)"
        )
    return REGISTRY[name]


def get_method(name: str, options: Mapping[str, Any] | None = None, /, **more: Any) -> Method:
    """An instance of a registered method; `options` (and keyword options) come from
    `attribution.options.<name>` and are validated by the method's `Options`."""
    return method_class(name)(**{**(options or {}), **more})


def method_options(method: str | type[Method], options: Mapping[str, Any] | None = None) -> MethodOptions:
    """`options` validated against a method's `Options` (nothing is built or loaded): an
    unknown option, a wrong type or a value out of range raises a DatablameError
    "attribution.options.<method>.<option>: ..."."""
    cls = method_class(method) if isinstance(method, str) else method
    try:
        return cls.Options.model_validate(dict(options or {}))
    except ValidationError as err:
        raise _options_error(cls, err) from None


def check_options_table(table: Mapping[str, Mapping[str, Any]], *, other_names_ok: bool = False) -> None:
    """Validate every `attribution.options.<name>` entry: `name` must be a registered method
    (unless `other_names_ok`: the benchmark's peers share the table) and its options valid."""
    for name, options in table.items():
        if name not in REGISTRY:
            if other_names_ok:
                continue
            raise DatablameError(
                f"attribution.options.{name}: unknown method {name!r}",
                f"use one of {sorted(REGISTRY)} (`datablame methods` lists them and their options)",
            )
        if not isinstance(options, Mapping):
            raise DatablameError(f"attribution.options.{name} must be a mapping of option: value, not {options!r}",
                                 f"see `datablame methods` for the options of {name!r}")
        method_options(name, options)


def _options_error(cls: type[Method], err: ValidationError) -> DatablameError:
    where = f"attribution.options.{cls.name}"
    by_option: dict[str, list[str]] = {}
    got: dict[str, Any] = {}
    for e in err.errors():
        loc = e.get("loc", ())
        key = str(loc[0]) if loc else ""
        if e["type"] == "extra_forbidden":
            known = ", ".join(cls.Options.model_fields) or "none"
            msg = f"unknown option of method {cls.name!r}; its options: {known}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got.setdefault(key, e.get("input"))
        if msg not in by_option.setdefault(key, []):
            by_option[key].append(msg)
    parts = []
    for key, msgs in by_option.items():
        text = f"{where}.{key}" if key else where
        shown = f" (got {got[key]!r})" if key in got and key and not isinstance(got[key], dict) else ""
        parts.append(f"{text}: {' or '.join(msgs)}{shown}")
    first = next(iter(by_option), "")
    return DatablameError(
        "; ".join(parts),
        f"fix {where + '.' + first if first else where}; `datablame methods` lists every method's options "
        "with their types and defaults",
    )


def _type_name(annotation: Any) -> str:
    """A readable type: `float | null`, `'mean' | 'last'`, `list[int]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0]) + _bounds(list(annotation.__metadata__))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else getattr(origin, "__name__", str(origin))
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def describe_options(cls: type[Method]) -> list[dict[str, Any]]:
    """Each option of a method: name, type, default and one-line description."""
    return [
        {"name": n, "type": _type_name(f.annotation) + _bounds(f.metadata),
         "default": f.get_default(call_default_factory=True), "description": f.description or ""}
        for n, f in cls.Options.model_fields.items()
    ]


def _bounds(metadata: list[Any]) -> str:
    """Field constraints as text: ', >= 0', ', > 0 and <= 100'."""
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    metadata = [x for m in metadata for x in (getattr(m, "metadata", None) or [m])]  # Field(...) in Annotated
    parts = [f"{op} {getattr(m, attr)}" for m in metadata for attr, op in ops.items() if getattr(m, attr, None) is not None]
    return f" ({' and '.join(parts)})" if parts else ""


def describe_all() -> list[dict[str, Any]]:
    """Every registered method (by name) as a plain dict: name, family, sign, unit, cost,
    module and options. The source of `datablame methods` and the README's methods table."""
    return [
        {"name": name, "family": cls.family, "sign": cls.sign, "unit": cls.unit, "cost": cls.cost,
         "module": cls.__module__, "options": describe_options(cls)}
        for name, cls in sorted(REGISTRY.items())
    ]
