"""Influence functions with the exact Hessian, for small parameter sets (Koh & Liang 2017).

score[q, r] = g_qᵀ (H + λI)⁻¹ g_r, with H the exact Hessian of the mean per-row training loss
(completion-token NLL, nats) w.r.t. the weights of a few selected linear layers, and g the
exact (unprojected) per-row gradients of those weights. No Kronecker or Fisher approximation:
this is the reference the approximate methods are checked against on small models, and the
same code (`datablame.curvature.hessian`) reproduces leave-one-out retraining on a convex
model (benchmarks/convex_loo.py: Pearson ≈ 0.997).

Sign: higher = up-weighting (training on) the row lowers the query's loss. Unit: nats of
query-loss decrease per unit extra weight on the row in the mean training objective; removing
the row raises the query loss by about score / n_rows.

Options (`attribution.options.hessian_influence`):
- `pattern` / `layers`: which linear layers' weights (default: `attribution.modules`);
  keep it small, e.g. `pattern: 'layers\\.1\\.mlp\\.down_proj$'`;
- `solver`: "explicit" (build H, p x p, solve through its eigendecomposition; works for an
  indefinite H), "cg" (conjugate gradient on Hessian-vector products, never forms H; needs
  H + λI positive definite), "auto" (explicit up to `explicit_max_params` = 4096, else cg);
- `damping` (null = 0.1 x mean Hessian eigenvalue, i.e. trace / p: exact for explicit, a
  Hutchinson estimate for cg; or an absolute λ in nats per unit weight²);
- `max_params` (200000): above it the method refuses with the fix; `cg_tol` (1e-6),
  `cg_max_iter` (100), `batch_size` (null = attribution.batch_size; larger batches make
  each Hessian-vector product pass faster on small models), `seed` (0).
Cost: explicit ~p Hessian-vector products per batch; cg one dataset pass of HVPs per iteration.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from datablame.config import ModuleSelection, ProjectionConfig
from datablame.curvature.base import HEURISTIC_DAMPING_SCALE
from datablame.curvature.hessian import (
    HessianOperator,
    conjugate_gradient,
    explicit_hessian,
    hutchinson_trace,
    mean_eigenvalue_heuristic,
    solve_damped,
)
from datablame.errors import DatablameError
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.methods.base import AttributionInputs, Method, register
from datablame.models.tokenize import pad_batch, per_row_loss


@contextmanager
def _only_these_require_grad(model: torch.nn.Module, params: list[torch.Tensor]):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    chosen = {id(p) for p in params}
    for p, _ in flags:
        p.requires_grad_(id(p) in chosen)
    model.eval()
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


@register
class HessianInfluence(Method):
    name = "hessian_influence"
    unit = ("nats of query-loss decrease per unit extra weight on the row in the mean training "
            "objective (exact Hessian of the selected weights)")
    cost = "exact Hessian: ~p Hessian-vector products per batch (explicit) or one HVP pass per CG iteration"

    def __init__(
        self, pattern: str | None = None, layers: str | None = None, solver: str = "auto",
        damping: float | None = None, damping_scale: float = HEURISTIC_DAMPING_SCALE,
        max_params: int = 200_000, explicit_max_params: int = 4096,
        cg_tol: float = 1e-6, cg_max_iter: int = 100, batch_size: int | None = None, seed: int = 0,
    ) -> None:
        if solver not in ("auto", "explicit", "cg"):
            raise DatablameError(f"hessian_influence: unknown solver {solver!r}", "choose 'auto', 'explicit' or 'cg'")
        if damping is not None and damping < 0:
            raise DatablameError("hessian_influence: damping must be >= 0 or null", "fix attribution.options.hessian_influence.damping")
        self.pattern, self.layers, self.solver = pattern, layers, solver
        self.damping, self.damping_scale = damping, damping_scale
        self.max_params, self.explicit_max_params = max_params, explicit_max_params
        self.cg_tol, self.cg_max_iter, self.seed = cg_tol, cg_max_iter, seed
        self.batch_size = batch_size
        self.info: dict = {}
        self._pq: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    def _modules(self, inputs: AttributionInputs):
        base = inputs.attribution.modules
        sel = ModuleSelection(
            pattern=self.pattern if self.pattern is not None else base.pattern,
            layers=self.layers if self.layers is not None else base.layers,
            lora_only=base.lora_only if self.pattern is None else False,
        )
        modules = select_modules(inputs.model, sel)
        p = sum(m.weight.numel() for _, m in modules)
        if p > self.max_params:
            raise DatablameError(
                f"hessian_influence needs the exact Hessian of the selected weights, and {len(modules)} modules "
                f"({', '.join(n for n, _ in modules[:4])}{', ...' if len(modules) > 4 else ''}) hold {p:,} "
                f"parameters (limit max_params = {self.max_params:,})",
                "select fewer weights with attribution.options.hessian_influence.pattern / layers "
                "(e.g. pattern: 'layers\\.1\\.mlp\\.down_proj$'), or use method 'ekfac' for the whole model",
            )
        return modules, p

    def fit(self, inputs: AttributionInputs) -> None:
        modules, p = self._modules(inputs)
        model = inputs.model
        pad = inputs.tokenizer.pad_token_id or 0
        bs = self.batch_size or inputs.attribution.batch_size
        # identity projection: the exact per-row weight gradients, flattened like the weights
        feat = GradientFeaturizer(model, modules, FactoredProjection(ProjectionConfig(k_in=None, k_out=None)))
        rows, _ = feat.featurize(inputs.rows, bs, pad, desc="hessian_influence: row gradients")
        queries, _ = feat.featurize(inputs.query_rows, bs, pad, desc=False)
        params = [m.weight for _, m in modules]
        n = len(inputs.rows)
        batches = [
            {k: v.to(params[0].device) for k, v in pad_batch(inputs.rows.input_ids[s : s + bs], inputs.rows.labels[s : s + bs], pad).items()}
            for s in range(0, n, bs)
        ]

        def closure(b):
            return lambda: per_row_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).sum() / n

        closures = [closure(b) for b in batches]
        solver = self.solver if self.solver != "auto" else ("explicit" if p <= self.explicit_max_params else "cg")
        with _only_these_require_grad(model, params):
            if solver == "explicit":
                h = explicit_hessian(closures, params, progress="hessian_influence: explicit Hessian")
                lam = self.damping if self.damping is not None else mean_eigenvalue_heuristic(h, scale=self.damping_scale)
                x, info = solve_damped(h, queries, lam)
            else:
                matvec = HessianOperator(closures, params)
                if self.damping is not None:
                    lam = self.damping
                else:
                    lam = mean_eigenvalue_heuristic(trace_estimate=hutchinson_trace(matvec, p, seed=self.seed), p=p, scale=self.damping_scale)
                x, info = conjugate_gradient(matvec, queries, lam, tol=self.cg_tol, max_iter=self.cg_max_iter,
                                             progress="hessian_influence: conjugate gradient")
        self.info = {"solver": solver, "params": p, "modules": [n for n, _ in modules], **info.as_dict()}
        self._pq, self._rows = x, rows

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        if self._pq is None:
            self.fit(inputs)
        return (self._pq @ self._rows.double().T).numpy()

    def describe(self) -> dict[str, str]:
        d = super().describe()
        if self.info:
            d["curvature"] = ", ".join(f"{k}={v}" for k, v in self.info.items() if k != "modules")
        return d
