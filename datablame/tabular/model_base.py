"""The one interface every tabular model has, and the per-example losses they share.

Losses, per row: classification = cross-entropy of the true class, in nats; regression = half the
squared error of the standardised target (0.5 * (y - f)^2, units of target variance).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from datablame.errors import DatablameError
from datablame.tabular.data import Task

PROB_FLOOR = 1e-12


def per_example_loss(pred: np.ndarray, y: np.ndarray, task: Task) -> np.ndarray:
    """Cross-entropy (nats) of probabilities (n, K), or 0.5 * squared error of predictions (n,)."""
    if task == "classification":
        p = np.clip(pred[np.arange(len(y)), np.asarray(y, dtype=int)], PROB_FLOOR, 1.0)
        return -np.log(p)
    return 0.5 * (np.asarray(pred, float) - np.asarray(y, float)) ** 2


def loss_gradient_wrt_output(pred: np.ndarray, y: np.ndarray, task: Task) -> np.ndarray:
    """d loss / d raw output: p - onehot(y) for softmax logits (n, K); f - y for regression (n, 1)."""
    if task == "classification":
        g = np.array(pred, dtype=float, copy=True)
        g[np.arange(len(y)), np.asarray(y, dtype=int)] -= 1.0
        return g
    return (np.asarray(pred, float) - np.asarray(y, float))[:, None]


class TabularModel(ABC):
    """fit / predict / loss, plus `fit_without` (exact removal) and `clone` (same settings, unfitted).

    `predict` gives class probabilities (n, K) for classification and the standardised target (n,)
    for regression.
    """

    kind: str = "model"
    differentiable: bool = False
    is_tree_ensemble: bool = False
    accepts_nan: bool = False

    def __init__(self, task: Task, n_classes: int = 0, seed: int = 0) -> None:
        if task not in ("classification", "regression"):
            raise DatablameError(f"Unknown task {task!r}.", "use 'classification' or 'regression'.")
        if task == "classification" and n_classes < 2:
            raise DatablameError(f"A classifier needs n_classes >= 2, got {n_classes}.",
                                 "pass the number of classes of the table (TableData.n_classes).")
        self.task, self.n_classes, self.seed = task, n_classes, seed
        self.fitted = False

    # --- each model kind implements these ----------------------------------------------------
    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> TabularModel:
        """Fit on (X, y) with optional per-row weights (0 = the row is left out); returns self."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) or the standardised regression target (n,)."""

    def params(self) -> dict:
        """The settings `clone` copies."""
        return {}

    # --- shared --------------------------------------------------------------------------------
    def clone(self, seed: int | None = None) -> TabularModel:
        return type(self)(self.task, self.n_classes, self.seed if seed is None else seed, **self.params())

    def loss(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-row loss (see the module docstring for units)."""
        return per_example_loss(self.predict(X), y, self.task)

    def fit_without(self, X: np.ndarray, y: np.ndarray, drop: np.ndarray | list[int]) -> TabularModel:
        """A fresh model (same settings and seed) trained on every row but `drop`."""
        keep = np.ones(len(y), dtype=bool)
        keep[np.asarray(drop, dtype=int)] = False
        return self.clone().fit(X[keep], y[keep])

    def _check_fit_input(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        if X.ndim != 2 or len(X) != len(y):
            raise DatablameError(f"X must be (n, d) with one row per target; got X {X.shape}, y {np.shape(y)}.",
                                 "pass the TableData's X_train and y_train.")
        if not self.accepts_nan and np.isnan(X).any():
            raise DatablameError(
                f"The features contain {int(np.isnan(X).sum())} missing values (NaN), which the {self.kind} "
                f"model cannot take.", "impute or drop them, or use the xgboost or lightgbm model.")
        if np.isnan(np.asarray(y, float)).any():
            raise DatablameError("The target contains missing values (NaN).", "drop the rows without a target.")
        if sample_weight is not None and (len(sample_weight) != len(y) or np.any(np.asarray(sample_weight) < 0)):
            raise DatablameError("sample_weight must hold one non-negative weight per row.",
                                 "pass weights of length n (0 drops a row).")

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise DatablameError(f"The {self.kind} model is not fitted yet.", "call fit(X, y) first.")
