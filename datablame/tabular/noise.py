"""Label-noise detection: corrupt a known share of the training labels, train on them, and rank the
train rows by each method's suspicion (registry.suspicion: self-influence, or how much a row hurts
the other rows). Reported: ROC AUC of finding the corrupted rows (0.5 = chance) and precision at
k = the number of corrupted rows."""

from __future__ import annotations

import numpy as np

from datablame.errors import DatablameError
from datablame.metrics import precision_at_k, roc_auc
from datablame.tabular.model_base import TabularModel
from datablame.tabular.registry import suspicion


def flip_labels(y: np.ndarray, fraction: float, task: str, n_classes: int = 0,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy y, indices of the corrupted rows). Classification: each chosen label moves to another
    class, uniformly. Regression: each chosen (standardised) target is negated and moved 2 standard
    deviations further from the mean, so it lands on the wrong side of it."""
    if not 0.0 < fraction < 1.0:
        raise DatablameError(f"The noise fraction must lie strictly between 0 and 1, got {fraction}.",
                             "pass e.g. fraction=0.1.")
    rng = np.random.default_rng(seed)
    n_flip = max(1, int(round(fraction * len(y))))
    idx = np.sort(rng.choice(len(y), size=n_flip, replace=False))
    noisy = np.array(y, copy=True)
    if task == "classification":
        noisy[idx] = (noisy[idx] + rng.integers(1, n_classes, size=n_flip)) % n_classes
    else:
        noisy[idx] = -noisy[idx] - 2.0 * np.sign(noisy[idx] + (noisy[idx] == 0))
    return noisy, idx


def noise_detection(model: TabularModel, X_train: np.ndarray, y_train: np.ndarray, methods: list[str], *,
                    fraction: float = 0.1, seed: int = 0) -> dict[str, dict[str, float]]:
    """{method: {"auc", "precision_at_k"}} on a copy of the train rows with `fraction` of labels corrupted."""
    noisy, idx = flip_labels(y_train, fraction, model.task, model.n_classes, seed)
    fitted = model.clone().fit(X_train, noisy)
    out = {}
    for name in methods:
        s = suspicion(name, fitted, X_train, noisy, seed=seed)
        out[name] = {"auc": roc_auc(s, idx.tolist()), "precision_at_k": precision_at_k(s, idx.tolist(), len(idx))}
    return out
