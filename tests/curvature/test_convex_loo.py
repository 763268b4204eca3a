"""Convex sanity (BENCHMARKS.md item 4): influence = leave-one-out on logistic regression.

Fails if the influence sign flips (Pearson would be ≈ -1) or the Hessian/solve is wrong.
"""

from __future__ import annotations

import torch

from datablame.bench.convex_loo import (
    _reg_weights,
    fit_newton,
    load_problem,
    row_losses,
    run_convex_loo,
)
from datablame.curvature.hessian import explicit_hessian


def test_influence_matches_leave_one_out_retraining():
    res = run_convex_loo(n_queries=2, n_loo=50, seed=0)
    assert res["rows_retrained"] == 50
    for q in res["per_query"]:
        assert q["pearson"] >= 0.95, res["per_query"]
    assert res["pearson_pooled"] >= 0.95


def test_autograd_hessian_equals_closed_form():
    prob = load_problem()
    theta = fit_newton(prob.x_train, prob.y_train, prob.c)
    n, d = prob.x_train.shape
    reg = _reg_weights(d, prob.c)
    p = torch.sigmoid(prob.x_train @ theta)
    closed = ((prob.x_train * (p * (1 - p))[:, None]).T @ prob.x_train + torch.diag(reg)) / n
    th = theta.clone().requires_grad_(True)
    h = explicit_hessian([lambda: (row_losses(th, prob.x_train, prob.y_train).sum() + (reg * th * th).sum() / 2) / n], [th])
    torch.testing.assert_close(h, closed, rtol=1e-10, atol=1e-12)
    grad = prob.x_train.T @ (p - prob.y_train) + reg * theta
    assert float(grad.norm()) < 1e-10  # the model is at its exact optimum
