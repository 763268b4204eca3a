"""Differentiable tabular models in torch (float64, full batch, deterministic): an MLP and an
L2-regularised linear/logistic model (strictly convex, so influence functions are exact to first
order).

Training objective, for N rows with weights w (1 by default; 0 removes a row exactly, the
normaliser N stays the row count):  J(theta) = (1/N) sum_i w_i loss_i(theta) + (l2/2) ||theta||^2.
Every parameter, biases included, is regularised, so J's Hessian is positive definite for the
linear model. Checkpoints (theta and the step size after each training phase) are kept for TracIn.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from datablame.errors import DatablameError
from datablame.tabular.model_base import TabularModel


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny full-batch models train ~10x faster on one thread than on contended several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Net(nn.Module):
    def __init__(self, d: int, out: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.Tanh()) if hidden else nn.Identity()
        self.head = nn.Linear(hidden or d, out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TorchModel(TabularModel):
    """Shared machinery: a flat parameter vector, per-example losses and gradients, the Hessian."""

    differentiable = True
    hidden = 0

    def __init__(self, task, n_classes=0, seed=0, *, l2: float = 1e-2) -> None:
        super().__init__(task, n_classes, seed)
        if l2 <= 0:
            raise DatablameError(f"l2 must be > 0, got {l2}.", "pass a positive l2 (e.g. 1e-2).")
        self.l2 = l2
        self.net: _Net | None = None
        self.checkpoints: list[tuple[float, torch.Tensor]] = []  # (step size, flat theta)

    @property
    def out_dim(self) -> int:
        return self.n_classes if self.task == "classification" else 1

    # --- parameters as one flat vector ----------------------------------------------------------
    def _names_shapes(self) -> list[tuple[str, torch.Size]]:
        assert self.net is not None
        return [(n, p.shape) for n, p in self.net.named_parameters()]

    def theta(self) -> torch.Tensor:
        assert self.net is not None
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()]).clone()

    def _unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, shape in self._names_shapes():
            n = int(np.prod(shape))
            out[name] = theta[i:i + n].reshape(shape)
            i += n
        return out

    def _outputs(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.net, self._unflatten(theta), (x,))

    def _losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(out, y, reduction="none")
        return 0.5 * (out[..., 0] - y) ** 2

    def _objective(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (w * self._losses(self._outputs(theta, x), y)).sum() / len(y) + 0.5 * self.l2 * theta.pow(2).sum()

    def _tensors(self, X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(X, float), dtype=torch.float64)
        dtype = torch.long if self.task == "classification" else torch.float64
        return x, torch.as_tensor(np.asarray(y), dtype=dtype)

    # --- the TabularModel interface -------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        self._check_fit_input(X, y, sample_weight)
        x, t = self._tensors(X, y)
        w = torch.ones(len(y), dtype=torch.float64) if sample_weight is None else \
            torch.as_tensor(np.asarray(sample_weight, float))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = _Net(X.shape[1], self.out_dim, self.hidden).double()
        theta = self.theta().requires_grad_(True)
        self.checkpoints = []
        with one_thread():
            self._train(theta, x, t, w)
        with torch.no_grad():
            for p, v in zip(self.net.parameters(), self._unflatten(theta.detach()).values(), strict=True):
                p.copy_(v)
        self.fitted = True
        return self

    @abstractmethod
    def _train(self, theta, x, t, w) -> None:
        """Fit the flat parameter vector `theta` in place on inputs x, targets t, row weights w."""

    def fit_without(self, X, y, drop):
        """Exact removal: the dropped rows get weight 0, everything else (normaliser N, seed) is kept."""
        w = np.ones(len(y))
        w[np.asarray(drop, dtype=int)] = 0.0
        return self.clone().fit(X, y, sample_weight=w)

    def raw_output(self, X: np.ndarray, theta: torch.Tensor | None = None) -> np.ndarray:
        self._require_fitted()
        with torch.no_grad():
            out = self._outputs(self.theta() if theta is None else theta, self._tensors(X, np.zeros(len(X)))[0])
        return out.numpy()

    def predict(self, X):
        out = self.raw_output(X)
        if self.task == "classification":
            return torch.softmax(torch.as_tensor(out), dim=1).numpy()
        return out[:, 0]

    # --- what the attribution methods need ------------------------------------------------------
    def per_example_grads(self, X: np.ndarray, y: np.ndarray, theta: torch.Tensor | None = None) -> np.ndarray:
        """(n, p) gradients of each row's loss (not the objective: no L2 term) at theta (default: fitted)."""
        self._require_fitted()
        x, t = self._tensors(X, y)
        theta = self.theta() if theta is None else theta

        def one(th, xi, yi):
            return self._losses(self._outputs(th, xi[None]), yi[None])[0]

        g = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(theta, x, t)
        return g.detach().numpy()

    def objective_hessian(self, X: np.ndarray, y: np.ndarray, max_params: int = 4000) -> np.ndarray:
        """(p, p) exact Hessian of J (unit weights) at the fitted theta."""
        self._require_fitted()
        theta = self.theta()
        if len(theta) > max_params:
            raise DatablameError(f"The exact Hessian of {len(theta)} parameters is too large (limit {max_params}).",
                                 "use a smaller model, or grad_dot / tracin, which need no Hessian.")
        x, t = self._tensors(X, y)
        w = torch.ones(len(t), dtype=torch.float64)
        return torch.func.hessian(lambda th: self._objective(th, x, t, w))(theta).detach().numpy()

    def last_layer_features(self, X: np.ndarray) -> np.ndarray:
        """(n, h + 1): the head's input with a constant 1 for its bias (the bias is regularised too)."""
        self._require_fitted()
        with torch.no_grad():
            f = self.net.features(self._tensors(X, np.zeros(len(X)))[0]).numpy()
        return np.hstack([f, np.ones((len(f), 1))])


class LinearModel(TorchModel):
    """Logistic (softmax) regression or ridge regression, trained by damped Newton steps (exact Hessian,
    backtracking line search) until the objective's gradient norm is below `tol`; each Newton step
    is a checkpoint with its step length."""

    kind = "linear"

    def __init__(self, task, n_classes=0, seed=0, *, l2: float = 1e-2, max_iter: int = 50, tol: float = 1e-10) -> None:
        super().__init__(task, n_classes, seed, l2=l2)
        self.max_iter, self.tol = max_iter, tol

    def params(self):
        return {"l2": self.l2, "max_iter": self.max_iter, "tol": self.tol}

    def _train(self, theta, x, t, w):
        th = theta.detach().clone()

        def J(v):
            return self._objective(v, x, t, w)

        grad_fn, hess_fn = torch.func.grad(J), torch.func.hessian(J)
        for _ in range(self.max_iter):
            g = grad_fn(th)
            if float(g.norm()) < self.tol:
                break
            step = torch.linalg.solve(hess_fn(th), g)
            j0, slope, lr = float(J(th)), float(g @ step), 1.0
            while float(J(th - lr * step)) > j0 - 1e-4 * lr * slope and lr > 1e-10:
                lr *= 0.5
            th = th - lr * step
            self.checkpoints.append((lr, th.clone()))
        with torch.no_grad():
            theta.copy_(th)


class MLPModel(TorchModel):
    """One tanh hidden layer, full-batch Adam for a fixed number of epochs."""

    kind = "mlp"

    def __init__(self, task, n_classes=0, seed=0, *, hidden: int = 16, l2: float = 1e-3, epochs: int = 300,
                 lr: float = 0.02, n_checkpoints: int = 5) -> None:
        super().__init__(task, n_classes, seed, l2=l2)
        self.hidden, self.epochs, self.lr, self.n_checkpoints = hidden, epochs, lr, n_checkpoints

    def params(self):
        return {"hidden": self.hidden, "l2": self.l2, "epochs": self.epochs, "lr": self.lr,
                "n_checkpoints": self.n_checkpoints}

    def _train(self, theta, x, t, w):
        opt = torch.optim.Adam([theta], lr=self.lr)
        every = max(1, self.epochs // max(1, self.n_checkpoints))
        for epoch in range(1, self.epochs + 1):
            opt.zero_grad()
            self._objective(theta, x, t, w).backward()
            opt.step()
            if epoch % every == 0 or epoch == self.epochs:
                self.checkpoints.append((self.lr * every, theta.detach().clone()))
