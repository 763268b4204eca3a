"""Exact Hessian curvature for small parameter counts: explicit matrix or conjugate gradient.

The training objective is given as a sequence of closures, each returning one batch's share
of a scalar loss (their sum is the objective, e.g. the mean per-row NLL plus any
regulariser). Hessian-vector products use double backward, batched over vectors with
`is_grads_batched`; attention runs on the math SDPA kernel (the fused CPU kernel has no
double backward).

- `explicit_hessian` builds H (p x p) from p Hessian-vector products in chunks;
  `solve_damped` applies (H + λI)⁻¹ through its eigendecomposition, which also reports
  negative curvature (a non-convex model away from a minimum).
- `conjugate_gradient` solves (H + λI) X = B with one dataset pass of HVPs per iteration
  and never forms H; it needs H + λI positive definite and stops with a clear error if a
  direction of non-positive curvature shows up.

Influence is then g_qᵀ (H + λI)⁻¹ g_r (see `base.py` for the sign and unit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from datablame.errors import DatablameError

LossFn = Callable[[], torch.Tensor]


@contextmanager
def double_backward_attention():
    """Use the math SDPA kernel, whose backward is itself differentiable."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _flat(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _unflat_batched(x: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    return torch.cat([t.reshape(k, -1) for t in x], dim=1)


def param_count(params: Sequence[torch.Tensor]) -> int:
    return sum(p.numel() for p in params)


def _hv(g: torch.Tensor, params: Sequence[torch.Tensor], vectors: torch.Tensor, retain: bool) -> torch.Tensor:
    hv = torch.autograd.grad(g, params, grad_outputs=vectors, is_grads_batched=True, allow_unused=True, retain_graph=retain)
    hv = [torch.zeros((len(vectors), *p.shape), dtype=p.dtype) if h is None else h for h, p in zip(hv, params, strict=True)]
    return _unflat_batched(hv, len(vectors)).double().cpu()


def hvp(loss_fns: Iterable[LossFn], params: Sequence[torch.Tensor], vectors: torch.Tensor) -> torch.Tensor:
    """H V for vectors [k, p] (H = Hessian of the summed closures), float64 [k, p]."""
    vectors = vectors.to(params[0].dtype)
    out = torch.zeros(vectors.shape, dtype=torch.float64)
    with double_backward_attention(), torch.enable_grad():
        for fn in loss_fns:
            g = _flat(torch.autograd.grad(fn(), params, create_graph=True))
            out += _hv(g, params, vectors.to(g.device), retain=False)
    return out


class HessianOperator:
    """H V with each batch's gradient graph built once and kept (forward + first backward
    are not redone every CG iteration: ~2x faster). Memory: every batch's double-backward
    graph at once, so meant for the small models this module is for."""

    def __init__(self, loss_fns: Iterable[LossFn], params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        with double_backward_attention(), torch.enable_grad():
            self.grads = [_flat(torch.autograd.grad(fn(), self.params, create_graph=True)) for fn in loss_fns]

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(vectors.shape, dtype=torch.float64)
        with double_backward_attention():
            for g in self.grads:
                out += _hv(g, self.params, vectors.to(device=g.device, dtype=g.dtype), retain=True)
        return out


def explicit_hessian(
    loss_fns: Sequence[LossFn], params: Sequence[torch.Tensor], *, chunk: int = 256, progress: bool | str = False,
) -> torch.Tensor:
    """The full Hessian [p, p] (float64, symmetrised) of the summed closures."""
    p = param_count(params)
    dtype = params[0].dtype
    h = torch.zeros(p, p, dtype=torch.float64)
    with double_backward_attention(), torch.enable_grad():
        bar = tqdm(loss_fns, desc=progress if isinstance(progress, str) else "explicit Hessian", disable=not progress, unit="batch")
        for fn in bar:
            g = _flat(torch.autograd.grad(fn(), params, create_graph=True))
            for s in range(0, p, chunk):
                e = torch.zeros(min(chunk, p - s), p, dtype=dtype, device=g.device)
                e[torch.arange(len(e)), torch.arange(s, s + len(e))] = 1
                cols = torch.autograd.grad(g, params, grad_outputs=e, is_grads_batched=True, retain_graph=True, allow_unused=True)
                cols = [torch.zeros((len(e), *q.shape), dtype=q.dtype) if c is None else c for c, q in zip(cols, params, strict=True)]
                h[s : s + len(e)] += _unflat_batched(cols, len(e)).double().cpu()
    return (h + h.T) / 2


@dataclass
class SolveInfo:
    damping: float
    min_eigenvalue: float | None = None
    max_eigenvalue: float | None = None
    negative_eigenvalues: int | None = None
    iterations: int | None = None
    residual: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def solve_damped(h: torch.Tensor, b: torch.Tensor, damping: float) -> tuple[torch.Tensor, SolveInfo]:
    """X = (H + λI)⁻¹ Bᵀ for right-hand sides B [k, p]; returns X [k, p] (float64)."""
    vals, vecs = torch.linalg.eigh(h.double())
    shifted = vals + damping
    if torch.any(shifted.abs() < 1e-300):
        raise DatablameError("H + damping·I is singular", "raise the damping")
    x = ((b.double() @ vecs) / shifted) @ vecs.T
    info = SolveInfo(damping, float(vals[0]), float(vals[-1]), int((vals < 0).sum()))
    return x, info


def mean_eigenvalue_heuristic(h: torch.Tensor | None = None, trace_estimate: float | None = None, p: int | None = None, scale: float = 0.1) -> float:
    """kronfluence-style damping: `scale` x mean eigenvalue (trace / p), floored at a tiny positive."""
    mean = float(torch.trace(h.double())) / h.shape[0] if h is not None else float(trace_estimate) / int(p)
    return max(scale * mean, 1e-12)


def hutchinson_trace(matvec: Callable[[torch.Tensor], torch.Tensor], p: int, probes: int = 16, seed: int = 0) -> float:
    """Unbiased trace estimate E[zᵀ H z] with Rademacher probes (one batched HVP call)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (probes, p), generator=gen).double() * 2 - 1
    return float((z * matvec(z)).sum(1).mean())


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, damping: float, *,
    tol: float = 1e-8, max_iter: int = 200, progress: bool | str = False,
) -> tuple[torch.Tensor, SolveInfo]:
    """Solve (H + λI) x_k = b_k for every row of B [k, p] at once (independent CG runs,
    vectorised); `matvec(V [k, p]) -> H V`. Stops when every relative residual < tol."""
    b = b.double()
    x = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rs = (r * r).sum(1)
    b_norm = b.norm(dim=1).clamp_min(1e-300)
    it = 0
    bar = tqdm(total=max_iter, desc=progress if isinstance(progress, str) else "conjugate gradient", disable=not progress)
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported
        ad = matvec(d) + damping * d
        curv = (d * ad).sum(1)
        active = rs.sqrt() / b_norm >= tol
        if torch.any(active & (curv <= 0)):
            bar.close()
            raise DatablameError(
                f"H + damping·I is not positive definite (curvature {float(curv.min()):.3g} along a CG direction, "
                f"damping {damping:.3g}); the model is not at a minimum of this loss",
                "raise attribution.options.hessian_influence.damping, or use solver: explicit (handles indefinite H)",
            )
        alpha = torch.where(active, rs / curv.clamp_min(1e-300), torch.zeros_like(rs))
        x += alpha[:, None] * d
        r -= alpha[:, None] * ad
        rs_new = (r * r).sum(1)
        bar.update(1)
        if torch.all(rs_new.sqrt() / b_norm < tol):
            rs = rs_new
            break
        beta = torch.where(active, rs_new / rs.clamp_min(1e-300), torch.zeros_like(rs))
        d = r + beta[:, None] * d
        rs = rs_new
    bar.close()
    return x, SolveInfo(damping, iterations=it, residual=float((rs.sqrt() / b_norm).max()))
