"""A table with a target column, encoded once on its train split: `TableData`.

Numeric features are standardised with the train split's mean and standard deviation (NaNs kept:
models that take missing values see them, the rest refuse them). Categorical features are one-hot
encoded with the categories seen in the train split; a test row (or any later row) with a category
the train split never had is an error, not a silent all-zero row. A regression target is
standardised too (`y_mean`, `y_std` undo it), so every loss is in the same units whatever the scale
of the target: squared error of the standardised target.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from datablame.errors import DatablameError

Task = Literal["classification", "regression"]
MISSING_CATEGORY = "<missing>"


@dataclass
class TableEncoder:
    """How raw columns become model features; fitted on the train split only."""

    numeric: list[str]
    categorical: dict[str, list[str]]  # column -> the train split's categories, in a fixed order
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return list(self.numeric) + [f"{c}={v}" for c, cats in self.categorical.items() for v in cats]

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical: list[str]) -> TableEncoder:
        numeric = [c for c in frame.columns if c not in categorical]
        cats = {c: sorted(set(_as_category(frame[c]))) for c in categorical}
        means = {c: float(np.nanmean(frame[c].to_numpy(float))) if frame[c].notna().any() else 0.0 for c in numeric}
        stds = {}
        for c in numeric:
            sd = float(np.nanstd(frame[c].to_numpy(float))) if frame[c].notna().any() else 0.0
            stds[c] = sd if sd > 0 else 1.0
        return cls(numeric, cats, means, stds)

    def transform(self, frame: pd.DataFrame, *, what: str = "rows") -> np.ndarray:
        """Feature matrix (n, d) float64; an unseen category raises DatablameError."""
        missing = [c for c in self.numeric + list(self.categorical) if c not in frame.columns]
        if missing:
            raise DatablameError(f"The {what} lack the feature columns {missing}.",
                                 "pass rows with the same columns as the training table.")
        parts = [((frame[c].to_numpy(float) - self.means[c]) / self.stds[c])[:, None] for c in self.numeric]
        for c, cats in self.categorical.items():
            values = _as_category(frame[c])
            unseen = sorted(set(values) - set(cats))
            if unseen:
                raise DatablameError(
                    f"Column {c!r} of the {what} has categories the train split never had: {unseen[:5]} "
                    f"(known: {cats[:10]}).",
                    "map them to a known category, drop those rows, or re-split so the train split has them.")
            index = {v: i for i, v in enumerate(cats)}
            onehot = np.zeros((len(values), len(cats)))
            onehot[np.arange(len(values)), [index[v] for v in values]] = 1.0
            parts.append(onehot)
        return np.hstack(parts) if parts else np.zeros((len(frame), 0))


def _as_category(col: pd.Series) -> list[str]:
    return [MISSING_CATEGORY if pd.isna(v) else str(v) for v in col.tolist()]


@dataclass
class TableData:
    """Encoded train/test split of one table. `y` holds class indices (classification, int64,
    into `classes`) or the standardised target (regression, float64)."""

    name: str
    task: Task
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    target: str
    encoder: TableEncoder
    classes: list[str] = field(default_factory=list)
    y_mean: float = 0.0
    y_std: float = 1.0
    train_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # rows of the source table
    test_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.task == "classification" else 0

    @property
    def has_nan(self) -> bool:
        return bool(np.isnan(self.X_train).any() or np.isnan(self.X_test).any())

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> TableData:
        """A seeded random subset of the rows of each split (for exact leave-one-out on small sets)."""
        rng = np.random.default_rng(seed)
        tr = np.sort(rng.permutation(len(self.y_train))[: n_train or len(self.y_train)])
        te = np.sort(rng.permutation(len(self.y_test))[: n_test or len(self.y_test)])
        return replace(self, X_train=self.X_train[tr], y_train=self.y_train[tr], X_test=self.X_test[te],
                       y_test=self.y_test[te], train_index=self.train_index[tr], test_index=self.test_index[te])

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Features of new rows, encoded like the train split (unseen categories raise)."""
        return self.encoder.transform(frame, what="new rows")


def _infer_task(y: pd.Series) -> Task:
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.dropna()
    if pd.api.types.is_integer_dtype(y) and values.nunique() <= 20:
        return "classification"
    return "regression"


def from_frame(frame: pd.DataFrame, target: str, *, task: Task | None = None, test_fraction: float = 0.25,
               seed: int = 0, categorical: list[str] | None = None, name: str = "table") -> TableData:
    """Encode a DataFrame into a seeded train/test split.

    `task` is inferred when not given (a non-numeric or small-integer target is classification).
    `categorical` defaults to the object, category, string and bool columns.
    """
    if target not in frame.columns:
        raise DatablameError(f"The table has no target column {target!r} (columns: {list(frame.columns)[:20]}).",
                             "name an existing column as the target.")
    if not 0.0 < test_fraction < 1.0:
        raise DatablameError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.",
                             "pass e.g. test_fraction=0.25.")
    y_col = frame[target]
    if y_col.isna().any():
        raise DatablameError(f"The target column {target!r} has {int(y_col.isna().sum())} missing values.",
                             "drop the rows without a target before building the table.")
    task = task or _infer_task(y_col)
    if task not in ("classification", "regression"):
        raise DatablameError(f"Unknown task {task!r}.", "use task='classification' or task='regression'.")
    if task == "regression" and (not pd.api.types.is_numeric_dtype(y_col) or pd.api.types.is_bool_dtype(y_col)):
        raise DatablameError(f"The target column {target!r} is not numeric ({y_col.dtype}), so it cannot be "
                             f"regressed on.", "use task='classification' or convert the target to numbers.")
    features = frame.drop(columns=[target])
    if categorical is None:
        categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
                       or pd.api.types.is_bool_dtype(features[c])]
    bad = [c for c in features.columns if c not in categorical and not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise DatablameError(f"Columns {bad} are neither numeric nor declared categorical.",
                             "list them in categorical=[...] or convert them to numbers.")
    n = len(frame)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 2:
        raise DatablameError(f"A table of {n} rows is too small for a split with test_fraction={test_fraction}.",
                             "use more rows.")
    perm = np.random.default_rng(seed).permutation(n)
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    train_f, test_f = features.iloc[train_idx], features.iloc[test_idx]
    encoder = TableEncoder.fit(train_f, list(categorical))
    X_train = encoder.transform(train_f, what="train split")
    X_test = encoder.transform(test_f, what="test split")
    classes: list[str] = []
    y_mean, y_std = 0.0, 1.0
    if task == "classification":
        y_str = np.array([str(v) for v in y_col.tolist()])
        classes = sorted(set(y_str[train_idx].tolist()))
        unseen = sorted(set(y_str[test_idx].tolist()) - set(classes))
        if unseen:
            raise DatablameError(f"The test split has target classes the train split never had: {unseen}.",
                                 "use more rows or another seed, or drop the rare classes.")
        if len(classes) < 2:
            raise DatablameError(f"The train split has only one class ({classes}).", "use a table with two or more classes.")
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in y_str], dtype=np.int64)
    else:
        raw = y_col.to_numpy(float)
        y_mean, y_std = float(raw[train_idx].mean()), float(raw[train_idx].std()) or 1.0
        y = (raw - y_mean) / y_std
    return TableData(name, task, X_train, y[train_idx], X_test, y[test_idx], encoder.feature_names, target, encoder,
                     classes, y_mean, y_std, train_idx, test_idx)


def from_file(path: str | Path, target: str, **kw) -> TableData:
    """`from_frame` on a CSV or Parquet file (chosen by the suffix)."""
    path = Path(path)
    if not path.is_file():
        raise DatablameError(f"No table file at {path}.", "pass the path of an existing .csv or .parquet file.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DatablameError(f"Unknown table format {suffix!r} for {path}.", "use a .csv or .parquet file.")
    except (ValueError, OSError, ImportError) as err:
        raise DatablameError(f"Could not read the table {path}: {err}.", "check the file is a valid CSV/Parquet.") from err
    kw.setdefault("name", path.stem)
    return from_frame(frame, target, **kw)
