"""A table run from its config (`TabularRunConfig`): the table, the model (trained or loaded), the
requested methods over the test rows as queries, and the retraining checks. Computation only:
`datablame.report.tabular` writes the results and `datablame.api` joins the two.

Scores keep the registry's orientation and units (`registry`: higher = the train row lowered the
query's loss; each method's `unit`).
"""

from __future__ import annotations

import hashlib
import inspect
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datablame.config_tabular import TabularRunConfig
from datablame.errors import DatablameError
from datablame.tabular.data import TableData, from_file
from datablame.tabular.datasets import load_bundled
from datablame.tabular.lds import lds_check
from datablame.tabular.loading import PICKLE_SUFFIXES, load_model
from datablame.tabular.loo import agreement_with_loo, exact_loo, removal_test
from datablame.tabular.model_base import TabularModel
from datablame.tabular.models_trees import make_model
from datablame.tabular.registry import (
    TABULAR_METHODS,
    _load_all,
    attribute,
    get_method,
    methods_for,
    skipped_for,
)

NEEDS_FINITE = ("knn", "knn_shapley")  # feature-space distances: no NaN
SIGN = "higher = the train row lowered the query's loss (it helped the model get the query right)"


@dataclass
class TableRun:
    """A fitted model on a table and each method's scores (n_query, n_train) for the query rows."""

    cfg: TabularRunConfig
    table: TableData
    model: TabularModel
    source: str  # "trained" or the saved model's path
    queries: np.ndarray  # positions in the test split
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def X_query(self) -> np.ndarray:
        return self.table.X_test[self.queries]

    @property
    def y_query(self) -> np.ndarray:
        return self.table.y_test[self.queries]


def load_table(cfg: TabularRunConfig) -> TableData:
    d = cfg.data
    if d.dataset is not None:
        return load_bundled(d.dataset, test_fraction=d.test_size, seed=d.seed)
    return from_file(d.path, d.target, task=d.task, test_fraction=d.test_size, seed=d.seed,
                     categorical=d.categorical)


def build_model(cfg: TabularRunConfig, table: TableData) -> tuple[TabularModel, str]:
    """The config's model fitted on the train split, or its saved model checked against the table."""
    m = cfg.model
    if m.kind == "logistic" and table.task != "classification":
        raise DatablameError(f"model.kind 'logistic' is a classifier, but the target {table.target!r} is a "
                             f"regression target.", "use model.kind: linear (ridge regression) for it.")
    if m.load is None:
        kind = "linear" if m.kind == "logistic" else m.kind
        model = make_model(kind, table.task, table.n_classes, cfg.seed, **m.hyperparameters())
        _refuse_nan(model, table)
        return model.fit(table.X_train, table.y_train), "trained"
    if Path(m.load).suffix.lower() in PICKLE_SUFFIXES and not m.trust_pickle and Path(m.load).is_file():
        raise DatablameError(f"model.load {m.load} is a pickle (joblib) file; loading it runs any code it contains, "
                             "so it is refused by default.",
                             "set model.trust_pickle: true only for a file you made or trust, or save an XGBoost "
                             "(.json/.ubj) or LightGBM (.txt) model instead.")
    model = load_model(m.load, trust_pickle=m.trust_pickle)
    if model.kind != m.kind:
        raise DatablameError(f"model.load {m.load} holds a {model.kind} model, but model.kind is {m.kind!r}.",
                             f"set model.kind: {model.kind}.")
    if model.task != table.task or model.n_classes != table.n_classes:
        have = f"{model.task}" + (f" with {model.n_classes} classes" if model.n_classes else "")
        want = f"{table.task}" + (f" with {table.n_classes} classes" if table.n_classes else "")
        raise DatablameError(f"model.load {m.load} is a {have} model, but the table's target is {want}.",
                             "load the model trained on this table and target (or set data.task).")
    _refuse_nan(model, table)
    try:
        model.predict(table.X_test[:1])
    except (ValueError, RuntimeError) as err:  # the libraries' own feature-count checks
        raise DatablameError(f"model.load {m.load} cannot predict the table's {table.X_test.shape[1]} encoded "
                             f"features: {str(err).splitlines()[0][:200]}",
                             "load the model trained on this table's columns (same categorical encoding).") from None
    return model, str(m.load)


def _refuse_nan(model: TabularModel, table: TableData) -> None:
    """Missing values anywhere (train or test split) for a model that cannot take them."""
    if table.has_nan and not model.accepts_nan:
        n = int(np.isnan(table.X_train).sum() + np.isnan(table.X_test).sum())
        raise DatablameError(f"The table's features contain {n} missing values (NaN), which the {model.kind} model "
                             f"cannot take.", "impute or drop them, or use the xgboost, lightgbm or random_forest "
                             "model (they take missing values).")


def _option_names(name: str) -> list[str]:
    params = list(inspect.signature(get_method(name).fn).parameters.values())[5:]
    return [p.name for p in params]


def _option_types(name: str) -> dict[str, Any]:
    """{option: its annotation (with Field constraints)} of a method's function."""
    hints = typing.get_type_hints(get_method(name).fn, include_extras=True)
    return {o: hints.get(o, Any) for o in _option_names(name)}


def _option_default(name: str, key: str) -> Any:
    return inspect.signature(get_method(name).fn).parameters[key].default


def check_methods(names: list[str], options: dict[str, dict[str, Any]], *, where: str = "attribution") -> None:
    """Every name a tabular method and every option one its function takes, of the type and range it
    takes (before any training)."""
    from pydantic import TypeAdapter, ValidationError

    for name in names:
        get_method(name).fn  # noqa: B018  (raises on an unknown name)
    for name, opts in options.items():
        types = _option_types(get_method(name).name)
        unknown = sorted(set(opts) - set(types))
        if unknown:
            raise DatablameError(f"{where}.options.{name} has unknown option(s) {unknown}.",
                                 f"{name} takes {sorted(types) or 'no options'}.")
        for key, value in opts.items():
            try:
                TypeAdapter(types[key]).validate_python(value, strict=isinstance(value, str))
            except ValidationError as err:
                msg = err.errors()[0]["msg"]
                raise DatablameError(f"{where}.options.{name}.{key} = {value!r}: {msg}.",
                                     f"give {name}.{key} a valid value (default: "
                                     f"{_option_default(name, key)!r}).") from None


def choose_methods(cfg: TabularRunConfig, model: TabularModel, table: TableData,
                   names: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(the methods to run, notes on the ones left out). Named methods must apply to the model."""
    names = list(names or cfg.attribution.methods)
    if names:
        for name in names:
            method = get_method(name)
            if not method.applies_to(model):
                raise DatablameError(
                    f"attribution.methods: {name!r} needs a {method.needs} model for {'/'.join(method.tasks)}; this "
                    f"is a {model.kind} model for {model.task}.", f"use some of {methods_for(model)}.")
            reason = method.unsupported(model)
            if reason is not None:
                raise DatablameError(f"attribution.methods: {name!r} cannot run on this {model.kind} model: {reason}.",
                                     f"use some of {methods_for(model)}.")
            if name in NEEDS_FINITE and table.has_nan:
                raise DatablameError(f"attribution.methods: {name!r} measures feature-space distances, which the "
                                     f"table's missing values (NaN) do not allow.",
                                     "impute the features, or use a tree method (leaf_cooccurrence, boostin).")
        return names, []
    chosen = [n for n in methods_for(model) if n != "random"]
    notes = [f"{n} left out: {reason}" for n, reason in skipped_for(model).items()]
    if table.has_nan:
        notes += [f"{n} left out: the features have missing values (NaN)" for n in chosen if n in NEEDS_FINITE]
        chosen = [n for n in chosen if n not in NEEDS_FINITE]
    return chosen, notes


def query_positions(cfg: TabularRunConfig, table: TableData) -> np.ndarray:
    a = cfg.attribution
    n = len(table.y_test)
    if a.query_rows:
        bad = [i for i in a.query_rows if i >= n]
        if bad:
            raise DatablameError(f"attribution.query_rows {bad} lie outside the test split ({n} rows).",
                                 f"use positions 0..{n - 1}.")
        return np.array(a.query_rows, dtype=int)
    return np.arange(min(a.queries, n))


def run_attribution(cfg: TabularRunConfig, methods: list[str] | None = None) -> TableRun:
    check_methods(list(methods or cfg.attribution.methods), cfg.attribution.options)
    t0 = time.perf_counter()
    table = load_table(cfg)
    queries = query_positions(cfg, table)
    model, source = build_model(cfg, table)
    run = TableRun(cfg, table, model, source, queries, seconds={"prepare_s": time.perf_counter() - t0})
    names, run.notes = choose_methods(cfg, model, table, methods)
    for name in names:
        t = time.perf_counter()
        run.scores[name] = attribute(name, model, table.X_train, table.y_train, run.X_query, run.y_query,
                                     **cfg.attribution.options.get(name, {}))
        run.seconds[f"{name}_s"] = time.perf_counter() - t
    return run


def run_checks(run: TableRun, methods: list[str] | None = None) -> dict[str, Any]:
    """verify: exact LOO (on a seeded subset of at most `verify.max_train_rows` train rows, the
    methods rescored on it), the removal test and/or LDS (`tabular.lds`: `verify.lds.subsets`
    retrainings on random subsets) of each method on the full train split."""
    v = run.cfg.verify
    names = list(methods or v.methods or run.scores)
    unknown = [n for n in names if n not in run.scores]
    if unknown:
        raise DatablameError(f"verify.methods {unknown} were not run by the attribution.",
                             f"choose from {sorted(run.scores)}, or add them to attribution.methods.")
    out: dict[str, Any] = {"kind": "tabular", "methods": names, "settings": v.model_dump(mode="json"),
                           "queries": len(run.queries), "n_train": len(run.table.y_train), "method_errors": {}}
    t0 = time.perf_counter()
    opts = run.cfg.attribution.options
    if "loo" in v.checks:
        sub = run.table.subset(min(v.max_train_rows, len(run.table.y_train)), None, seed=run.cfg.data.seed)
        Xq, yq = run.X_query, run.y_query
        fitted = run.model.clone().fit(sub.X_train, sub.y_train)
        truth = exact_loo(run.model, sub.X_train, sub.y_train, Xq, yq)
        loo = {"train_rows": len(sub.y_train), "retrainings": len(sub.y_train), "per_method": {}}
        for name in names:
            try:
                s = attribute(name, fitted, sub.X_train, sub.y_train, Xq, yq, **opts.get(name, {}))
            except DatablameError as err:
                out["method_errors"][name] = err.problem
                continue
            loo["per_method"][name] = agreement_with_loo(s, truth, k=min(v.k, len(sub.y_train) - 1))
        out["loo"] = loo
    if "removal" in v.checks:
        k = min(v.k, len(run.table.y_train) - 1)
        out["removal"] = {name: removal_test(run.model, run.table.X_train, run.table.y_train, run.X_query,
                                             run.y_query, run.scores[name], k=k, seeds=tuple(v.seeds))
                          for name in names}
    if "lds" in v.checks:
        out["lds"] = lds_check(run.model, run.table.X_train, run.table.y_train, run.X_query, run.y_query,
                               {n: run.scores[n] for n in names}, num_subsets=v.lds.subsets,
                               fraction=v.lds.fraction, seed=v.lds.seed)
    out["seconds"] = time.perf_counter() - t0
    return out


def decode_rows(table: TableData, X: np.ndarray) -> list[dict[str, Any]]:
    """Encoded rows back to their raw feature values (numbers un-standardised, one-hots to categories)."""
    enc = table.encoder
    out = []
    for x in np.asarray(X, float):
        row: dict[str, Any] = {}
        for i, c in enumerate(enc.numeric):
            row[c] = None if np.isnan(x[i]) else round(float(x[i] * enc.stds[c] + enc.means[c]), 6)
        j = len(enc.numeric)
        for c, cats in enc.categorical.items():
            row[c] = cats[int(np.argmax(x[j:j + len(cats)]))] if cats else None
            j += len(cats)
        out.append(row)
    return out


def label_text(table: TableData, y: float | int) -> str:
    """A target value as the table wrote it (class name, or the un-standardised number)."""
    if table.task == "classification":
        return table.classes[int(y)]
    return f"{float(y) * table.y_std + table.y_mean:.6g}"


def prediction_text(table: TableData, model: TabularModel, X: np.ndarray) -> list[str]:
    pred = model.predict(X)
    if table.task == "classification":
        return [f"{table.classes[int(np.argmax(p))]} (p={float(np.max(p)):.2f})" for p in pred]
    return [label_text(table, p) for p in pred]


def table_fingerprint(table: TableData) -> str:
    h = hashlib.sha256()
    for a in (table.X_train, table.y_train, table.X_test, table.y_test):
        h.update(np.ascontiguousarray(a, dtype=float).tobytes())
    return h.hexdigest()


def describe_tabular_methods() -> list[dict[str, Any]]:
    """Every tabular method as a plain dict: name, what model it needs, tasks, how it ranks label
    noise, sign and unit, and its options (from the registry)."""
    _load_all()
    return [{"name": m.name, "needs": m.needs, "tasks": list(m.tasks), "noise": m.noise, "sign": SIGN,
             "unit": m.unit, "options": _option_names(m.name), "module": m.fn.__module__}
            for m in TABULAR_METHODS.values()]
