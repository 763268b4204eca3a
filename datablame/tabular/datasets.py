"""scikit-learn's bundled tables as `TableData` (shipped with scikit-learn: no download)."""

from __future__ import annotations

from datablame.errors import DatablameError
from datablame.tabular.data import TableData, from_frame

BUNDLED = {
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "diabetes": ("load_diabetes", "regression"),
    "digits": ("load_digits", "classification"),
}


def load_bundled(name: str, *, test_fraction: float = 0.25, seed: int = 0) -> TableData:
    """One of `BUNDLED` (breast_cancer, wine, diabetes, digits) with a seeded split."""
    if name not in BUNDLED:
        raise DatablameError(f"Unknown bundled dataset {name!r}.", f"use one of {sorted(BUNDLED)}.")
    import sklearn.datasets

    loader, task = BUNDLED[name]
    bunch = getattr(sklearn.datasets, loader)(as_frame=True)
    frame = bunch.frame.copy()
    target = "target"
    return from_frame(frame, target, task=task, test_fraction=test_fraction, seed=seed, categorical=[], name=name)
