"""Convex sanity check (BENCHMARKS.md item 4): influence functions vs leave-one-out retraining.

L2-regularised logistic regression on two classes of scikit-learn's bundled digits (8x8,
offline). The model is fitted exactly (Newton, float64, gradient norm < 1e-12); influence
uses the same code path as the language-model method `hessian_influence`
(`datablame.curvature.hessian`: the explicit autograd Hessian of the regularised mean loss
and `solve_damped` with no damping):

    score(q, r) = g_qᵀ H⁻¹ g_r,    predicted Δ loss_q when row r is removed = score / n

Each selected row is then actually left out and the model refitted exactly; the measured
Δ loss_q = loss_q(θ₋ᵣ) − loss_q(θ). Koh & Liang (2017) report Pearson ≈ 0.99 here.

The objective keeps the regulariser fixed when a row is removed
(Σ_i ℓ_i + ||w||² / 2C, the scikit-learn convention), which is exactly what an influence
function with weight ε = −1 on one row approximates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from datablame.curvature.hessian import explicit_hessian, solve_damped


@dataclass
class ConvexProblem:
    x_train: torch.Tensor  # [n, d+1] float64, last column = 1 (bias)
    y_train: torch.Tensor  # [n] in {0, 1}
    x_test: torch.Tensor
    y_test: torch.Tensor
    c: float  # inverse L2 strength on the weights (not the bias)
    classes: tuple[int, int]


def load_problem(classes: tuple[int, int] = (1, 7), test_fraction: float = 0.3, c: float = 1.0, seed: int = 0) -> ConvexProblem:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    x, y = x[keep] / 16.0, (y[keep] == classes[1]).astype(np.float64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    x = np.hstack([x, np.ones((len(x), 1))])
    n_test = int(round(test_fraction * len(y)))
    t = torch.from_numpy
    return ConvexProblem(t(x[n_test:]), t(y[n_test:]), t(x[:n_test]), t(y[:n_test]), c, tuple(classes))


def row_losses(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row logistic loss (nats)."""
    z = x @ theta
    return torch.nn.functional.softplus(z) - y * z


def _reg_weights(d: int, c: float) -> torch.Tensor:
    r = torch.full((d,), 1.0 / c, dtype=torch.float64)
    r[-1] = 0.0  # bias is not regularised
    return r


def fit_newton(x: torch.Tensor, y: torch.Tensor, c: float, theta0: torch.Tensor | None = None, tol: float = 1e-12, max_iter: int = 100) -> torch.Tensor:
    """Exact minimiser of Σ_i ℓ_i + Σ_j reg_j θ_j² / 2 (closed-form Newton steps)."""
    reg = _reg_weights(x.shape[1], c)
    theta = torch.zeros(x.shape[1], dtype=torch.float64) if theta0 is None else theta0.clone()
    for _ in range(max_iter):
        p = torch.sigmoid(x @ theta)
        grad = x.T @ (p - y) + reg * theta
        if float(grad.norm()) < tol:
            return theta
        h = (x * (p * (1 - p))[:, None]).T @ x + torch.diag(reg)
        theta = theta - torch.linalg.solve(h, grad)
    raise RuntimeError(f"Newton did not converge (|grad| = {float(grad.norm()):.3g})")


def influence_scores(prob: ConvexProblem, theta: torch.Tensor, query_idx: np.ndarray) -> np.ndarray:
    """score[q, r] = g_qᵀ H⁻¹ g_r with H the autograd Hessian of the regularised *mean* loss."""
    n, d = prob.x_train.shape
    reg = _reg_weights(d, prob.c)
    th = theta.clone().requires_grad_(True)

    def objective() -> torch.Tensor:  # (1/n) [Σ ℓ_i + Σ reg θ² / 2]
        return (row_losses(th, prob.x_train, prob.y_train).sum() + (reg * th * th).sum() / 2) / n

    h = explicit_hessian([objective], [th])
    per_row = torch.func.vmap(torch.func.grad(lambda t, x, y: row_losses(t, x[None], y[None]).sum()), in_dims=(None, 0, 0))
    g_rows = per_row(theta, prob.x_train, prob.y_train)
    g_q = per_row(theta, prob.x_test[query_idx], prob.y_test[query_idx])
    x, _ = solve_damped(h, g_q, damping=0.0)
    return (x @ g_rows.T).numpy()


def run_convex_loo(
    classes: tuple[int, int] = (1, 7), c: float = 1.0, n_queries: int = 5, n_loo: int | None = None,
    seed: int = 0, progress: bool = False,
) -> dict:
    """Influence vs actual leave-one-out for `n_queries` test rows (the highest-loss ones)
    over `n_loo` training rows (all when None). Returns figures and the raw pairs."""
    from tqdm.auto import tqdm

    prob = load_problem(classes, c=c, seed=seed)
    n = len(prob.y_train)
    theta = fit_newton(prob.x_train, prob.y_train, c)
    test_loss = row_losses(theta, prob.x_test, prob.y_test)
    query_idx = np.argsort(-test_loss.numpy(), kind="stable")[:n_queries]
    scores = influence_scores(prob, theta, query_idx)
    rows = np.arange(n) if n_loo is None or n_loo >= n else np.random.default_rng(seed).choice(n, n_loo, replace=False)
    base = row_losses(theta, prob.x_test[query_idx], prob.y_test[query_idx]).numpy()
    actual = np.zeros((len(query_idx), len(rows)))
    keep = torch.ones(n, dtype=torch.bool)
    for j, r in enumerate(tqdm(rows, desc="leave-one-out refits", disable=not progress)):
        keep[r] = False
        th = fit_newton(prob.x_train[keep], prob.y_train[keep], c, theta0=theta)
        keep[r] = True
        actual[:, j] = row_losses(th, prob.x_test[query_idx], prob.y_test[query_idx]).numpy() - base
    predicted = scores[:, rows] / n  # removal raises the query loss by score / n
    per_query = [
        {"test_row": int(q), "test_loss": float(base[i]),
         "pearson": float(stats.pearsonr(predicted[i], actual[i])[0]),
         "spearman": float(stats.spearmanr(predicted[i], actual[i])[0])}
        for i, q in enumerate(query_idx)
    ]
    return {
        "problem": {"dataset": "sklearn digits", "classes": list(classes), "n_train": n, "n_test": len(prob.y_test),
                    "features": prob.x_train.shape[1], "C": c, "objective": "sum logistic loss + ||w||^2 / (2C), bias free"},
        "rows_retrained": len(rows),
        "pearson": float(np.mean([q["pearson"] for q in per_query])),
        "spearman": float(np.mean([q["spearman"] for q in per_query])),
        "pearson_pooled": float(stats.pearsonr(predicted.ravel(), actual.ravel())[0]),
        "spearman_pooled": float(stats.spearmanr(predicted.ravel(), actual.ravel())[0]),
        "per_query": per_query,
        "predicted": predicted.tolist(),
        "actual": actual.tolist(),
    }
