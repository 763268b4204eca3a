"""Exact KNN-Shapley (Jia et al. 2019 closed form) equals brute-force Shapley enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from datablame.tabular.methods_baseline import knn_shapley_values


def _utility(subset: tuple[int, ...], order: list[int], y: np.ndarray, yq: int, k: int) -> float:
    """(1/K) * number of the min(K, |S|) nearest rows of S that carry the query's label."""
    ranked = [j for j in order if j in subset][:k]
    return sum(float(y[j] == yq) for j in ranked) / k


def _brute_force(X, y, xq, yq, k):
    n = len(y)
    order = list(np.argsort(np.linalg.norm(X - xq, axis=1), kind="stable"))
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                phi[i] += w * (_utility(s + (i,), order, y, yq, k) - _utility(s, order, y, yq, k))
    return phi


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_shapley_matches_enumeration_on_six_rows(k):
    rng = np.random.default_rng(k)
    X = rng.standard_normal((6, 2))
    y = np.array([0, 1, 0, 1, 1, 0])
    Xq = rng.standard_normal((2, 2))
    yq = np.array([0, 1])
    fast = knn_shapley_values(X, y, Xq, yq, k=k)
    for q in range(2):
        exact = _brute_force(X, y, Xq[q], yq[q], k)
        assert np.allclose(fast[q], exact, atol=1e-12), (fast[q], exact)
        # efficiency: the values sum to U(all rows) - U(empty set)
        order = list(np.argsort(np.linalg.norm(X - Xq[q], axis=1), kind="stable"))
        assert fast[q].sum() == pytest.approx(_utility(tuple(range(6)), order, y, yq[q], k))
