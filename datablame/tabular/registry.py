"""The tabular methods' own registry (separate from `datablame.methods`, which holds LLM methods).

Every method maps (fitted model, train rows, query rows) to scores[query_row, train_row], oriented
one way: higher = the train row pushed the query's loss down (or made the query's prediction more
like its true label). Each method documents its unit in `unit`.

`noise` says how the method ranks suspicious (mislabelled) train rows: "self" = self-influence,
the diagonal of scores(train, train), high = suspicious; "value" = the negated mean score a row
gets from the other train rows as queries, high = the row hurts the rest; "neighbours" (the
label-signed similarity methods) = the row as the query: the negated mean score the other train
rows get for it, high = the rows most like it pull away from its label; "random".

Why "neighbours" for label-signed similarities: in regression their sign compares targets with
the query's prediction, and a train row used as a query has a prediction the model has fitted to
it; as the column ("value") the sign then rests on other rows' near-zero residuals and ranked the
corrupted rows below chance (diabetes AUC 0.06-0.44). As the query, a corrupted row's own
prediction lies between its wrong target and its neighbours' targets, so they disagree with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from datablame.errors import DatablameError
from datablame.tabular.model_base import TabularModel

NEEDS = ("any", "differentiable", "tree", "boosted")


@dataclass(frozen=True)
class TabularMethod:
    name: str
    fn: Callable[..., np.ndarray]
    needs: str
    unit: str
    tasks: tuple[str, ...] = ("classification", "regression")
    noise: str = "value"
    limitation: Callable[[TabularModel], str | None] | None = None  # why it cannot run on a model, or None

    def unsupported(self, model: TabularModel) -> str | None:
        """Why the method cannot run on this model although its kind and task fit (a limit of the
        library it relies on, e.g. shap), or None."""
        return self.limitation(model) if self.limitation is not None else None

    def applies_to(self, model: TabularModel) -> bool:
        if model.task not in self.tasks:
            return False
        if self.needs == "differentiable":
            return model.differentiable
        if self.needs == "tree":
            return model.is_tree_ensemble
        if self.needs == "boosted":
            return model.is_tree_ensemble and getattr(model, "boosted", False)
        return True


TABULAR_METHODS: dict[str, TabularMethod] = {}


def tabular_method(name: str, *, needs: str, unit: str, tasks: tuple[str, ...] = ("classification", "regression"),
                   noise: str = "value", limitation: Callable[[TabularModel], str | None] | None = None) -> Callable:
    """Decorator adding a scoring function fn(model, X_train, y_train, X_query, y_query, **opts) to the registry.
    `limitation(model)` says why the method cannot run on a model its `needs` and `tasks` admit (or None)."""
    assert needs in NEEDS and noise in ("self", "value", "neighbours", "random")

    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        TABULAR_METHODS[name] = TabularMethod(name, fn, needs, unit, tasks, noise, limitation)
        return fn

    return wrap


def _load_all() -> None:
    from datablame.tabular import methods_baseline, methods_grad, methods_tree  # noqa: F401  (they register)


def get_method(name: str) -> TabularMethod:
    _load_all()
    if name not in TABULAR_METHODS:
        raise DatablameError(f"Unknown tabular method {name!r}.", f"use one of {sorted(TABULAR_METHODS)}.")
    return TABULAR_METHODS[name]


def methods_for(model: TabularModel) -> list[str]:
    """Names of the methods that apply to this model (kind and task) and can run on it (`skipped_for`)."""
    _load_all()
    return [n for n, m in TABULAR_METHODS.items() if m.applies_to(model) and m.unsupported(model) is None]


def skipped_for(model: TabularModel) -> dict[str, str]:
    """{method: why it cannot run} for the methods whose kind and task fit this model but that a
    library limit rules out (e.g. shap on a multi-class scikit-learn GradientBoostingClassifier)."""
    _load_all()
    out = {}
    for n, m in TABULAR_METHODS.items():
        reason = m.unsupported(model) if m.applies_to(model) else None
        if reason is not None:
            out[n] = reason
    return out


def attribute(name: str, model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray,
              y_query: np.ndarray, **opts) -> np.ndarray:
    """scores (n_query, n_train) of method `name` (sign and unit: `get_method(name).unit`)."""
    method = get_method(name)
    if not method.applies_to(model):
        raise DatablameError(
            f"Method {name!r} needs a {method.needs} model for {'/'.join(method.tasks)}; this is a "
            f"{model.kind} model for {model.task}.", f"use one of {methods_for(model)}.")
    reason = method.unsupported(model)
    if reason is not None:
        raise DatablameError(f"Method {name!r} cannot run on this {model.kind} model: {reason}.",
                             f"use one of {methods_for(model)}.")
    model._require_fitted()
    scores = np.asarray(method.fn(model, X_train, y_train, X_query, y_query, **opts), dtype=float)
    assert scores.shape == (len(X_query), len(X_train)), (name, scores.shape)
    return scores


def suspicion(name: str, model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, seed: int = 0,
              **opts) -> np.ndarray:
    """(n_train,) how suspicious each train row is (higher = more likely mislabelled), per `noise`."""
    method = get_method(name)
    if method.noise == "random":
        return np.random.default_rng(seed).standard_normal(len(y_train))
    scores = attribute(name, model, X_train, y_train, X_train, y_train, **opts)
    if method.noise == "self":
        return np.diag(scores).copy()
    if method.noise == "neighbours":
        return -(scores.sum(axis=1) - np.diag(scores)) / max(len(y_train) - 1, 1)
    off = scores.sum(axis=0) - np.diag(scores)
    return -off / max(len(y_train) - 1, 1)
