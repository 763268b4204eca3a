"""The method protocol, the registry, and the one way to run a method (`run_method`).

A method is one class in one file under `datablame/methods/`, named like the method
(`ekfac.py` registers `ekfac`): `@register`, a `name`, `family`, `sign`, `unit`, `cost`, an
`Options` model, and `score(ctx) -> [queries, rows]` (optionally `fit(ctx)`). Everything it
shares with other methods comes from the `AttributionContext` (`datablame.features`).
"""

from __future__ import annotations

import json
import logging
import time
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.hidden_states import POOLINGS, SPANS
from datablame.features.layer_aggregation import AGGREGATES

log = logging.getLogger("datablame")

FAMILIES = ("gradient", "influence", "representation", "lexical", "semantic", "judge", "counterfactual", "fusion",
            "baseline")


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
    # takes behaviour-level queries (a set of completions, a contrast) through
    # features.gradients.measure_queries; the others read each query's one completion string
    measures_behaviour: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        """Validates `options` against `Options` (DatablameError naming method and option)."""
        self.options = method_options(type(self), options)

    def fit(self, ctx: AttributionContext) -> None:  # noqa: B027 - optional hook
        """Precompute what `score` needs (features, factors). Default: nothing."""

    @abstractmethod
    def score(self, ctx: AttributionContext) -> np.ndarray:
        """Scores [n_queries, n_rows] (float64)."""

    def evidence(self, ctx: AttributionContext, query_index: int, rows: Sequence[int]) -> list[dict[str, Any]] | None:
        """Optional, after `score`: for each of `rows` (corpus indices, the query's blamed rows)
        what supports it, shown beside the row in results.json and the report. Default: none."""
        return None

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



@dataclass
class MethodRun:
    """One method fitted and scored on a context: its scores [queries, rows] (float64, shape
    checked) and the seconds fit + score took."""

    method: Method
    scores: np.ndarray
    seconds: float

    @property
    def name(self) -> str:
        return self.method.name


def run_method(
    ctx: AttributionContext, method: str | Method, options: Mapping[str, Any] | None = None
) -> MethodRun:
    """Build `method` (a registered name with `options`; default `attribution.options.<name>`),
    fit it, score every query against every row, check the shape, and time it. The one path
    by which api, verify, lds, bench, the cascade and the peer adapters run a method."""
    if isinstance(method, str):
        method = get_method(method, ctx.attribution.options.get(method, {}) if options is None else options)
    t = time.perf_counter()
    if ctx.query_measure is not None:
        _check_behaviour_queries(method)
    method.fit(ctx)
    raw = method.score(ctx)
    check_scores_shape(method.name, raw, len(ctx.queries), len(ctx.corpus))
    return MethodRun(method, np.asarray(raw, dtype=np.float64), time.perf_counter() - t)


_MEASURE_FAMILIES = ("gradient", "influence")


def _check_behaviour_queries(method: Method) -> None:
    """A gradient or influence method must measure behaviour-level queries as a whole (or say it
    cannot); the text and representation methods read each query's prompt and completion."""
    if method.measures_behaviour:
        return
    if method.family in _MEASURE_FAMILIES:
        able = sorted(n for n, c in REGISTRY.items() if c.measures_behaviour)
        raise DatablameError(
            f"method {method.name} cannot measure behaviour-level queries (queries with behaviour/contrast "
            "completions): it scores one completion string per query",
            f"use one of {', '.join(able)}, or drop the queries' behaviour/contrast lists for {method.name}")
    warning = (f"{method.name} ({method.family}) reads each query's prompt and first completion only; its "
               "behaviour/contrast completions are measured by the gradient and influence methods")
    if warning not in _warned:
        _warned.add(warning)
        log.warning(warning)


_warned: set[str] = set()


def scores_of(ctx: AttributionContext, name: str, options: Mapping[str, Any] | None = None, *, by: str) -> np.ndarray:
    """Scores [Q, R] of method `name` inside a run where method `by` leans on them (the LLM
    judge's candidates, the reference that learns layer weights); computed at most once per
    run, method and options (kept in `ctx.shared.method_scores`)."""
    if name == by:
        raise DatablameError(f"{by} cannot use its own scores as a reference", f"name another method than {by}")
    if name not in REGISTRY:
        raise DatablameError(f"{by}: unknown method {name!r} to take scores from", f"choose one of {sorted(REGISTRY)}")
    opts = dict(ctx.attribution.options.get(name, {}) if options is None else options)
    key = (name, json.dumps(opts, sort_keys=True, default=str))
    if key not in ctx.shared.method_scores:
        ctx.shared.method_scores[key] = run_method(ctx, name, opts).scores
    return ctx.shared.method_scores[key]


class LayerOptions(MethodOptions):
    """Options of the layer-wise methods: which layers, how to pool tokens, how to combine layers
    (`datablame.features.layer_aggregation`)."""

    layers: int | str | list[int] = Field("all", description="decoder layers: 'all', 'middle', an int (negative "
                                          "from the end), a list, or '1,3' / '1-3'")
    pooling: Literal[POOLINGS] = Field("mean", description="pool token vectors by their mean or the last token")
    span: Literal[SPANS] = Field("answer", description="tokens pooled: the answer's or all")
    aggregate: Literal[AGGREGATES] = Field("mean", description="combine layers: mean, mean of the top_k best, "
                                           "or convex weights learned from `reference`")
    top_k: int = Field(2, ge=1, description="layers averaged by aggregate: topk")
    layer_weights: list[float] | None = Field(None, description="fixed convex layer weights (one per selected "
                                              "layer, normalised to sum 1)")
    reference: str = Field("grad_cosine", description="method whose scores teach aggregate: learned")

    @model_validator(mode="after")
    def _convex(self) -> LayerOptions:
        w = self.layer_weights
        if w is not None and (any(x < 0 for x in w) or sum(w) <= 0):
            raise ValueError(f"layer_weights {w} are not convex weights: give one non-negative weight per "
                             "selected layer (they are normalised to sum 1)")
        return self

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
