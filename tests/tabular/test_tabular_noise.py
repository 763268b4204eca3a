"""Label-noise detection: corrupted labels are found well above chance by a reasonable method."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.errors import DatablameError
from datablame.tabular import flip_labels, load_bundled, make_model, noise_detection


def test_flip_labels_changes_exactly_the_reported_rows():
    y = np.arange(40) % 3
    noisy, idx = flip_labels(y, 0.25, "classification", 3, seed=1)
    assert len(idx) == 10 and np.all(noisy[idx] != y[idx])
    assert np.array_equal(np.delete(noisy, idx), np.delete(y, idx))
    with pytest.raises(DatablameError, match="noise fraction"):
        flip_labels(y, 1.5, "classification", 3)


def test_self_influence_finds_flipped_labels():
    d = load_bundled("breast_cancer").subset(80, 5, seed=0)
    model = make_model("linear", d.task, d.n_classes, 0, l2=0.05)
    res = noise_detection(model, d.X_train, d.y_train, ["influence", "knn", "random"], fraction=0.1, seed=0)
    assert res["influence"]["auc"] > 0.8, res
    assert res["knn"]["auc"] > 0.8, res
    assert res["influence"]["precision_at_k"] >= 0.5, res
    assert 0.2 < res["random"]["auc"] < 0.8
