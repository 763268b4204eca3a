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
from typing import Literal

import numpy as np
import torch
from pydantic import Field

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
from datablame.features.context import AttributionContext
from datablame.features.gradients import measure_queries
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.grads.modules import is_conv1d
from datablame.methods.base import Method, MethodOptions, register
from datablame.models.tokenize import pad_batch, per_row_loss


def _weight_layout(x: torch.Tensor, shapes, modules) -> torch.Tensor:
    """Features [N, D] (out x in blocks) reordered like the flattened weights (Conv1D: in x out)."""
    parts, start = [], 0
    for (_, o, i), (_, m) in zip(shapes, modules, strict=True):
        block = x[:, start : start + o * i].reshape(len(x), o, i)
        parts.append((block.transpose(1, 2) if is_conv1d(m) else block).reshape(len(x), -1))
        start += o * i
    return torch.cat(parts, dim=1)


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
    family = "influence"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = ("nats of query-loss decrease per unit extra weight on the row in the mean training "
            "objective (exact Hessian of the selected weights)")
    cost = "exact Hessian: ~p Hessian-vector products per batch (explicit) or one HVP pass per CG iteration"

    class Options(MethodOptions):
        pattern: str | None = Field(None, description="regex of the linear layers whose weights count "
                                    "(null = attribution.modules.pattern)")
        layers: str | None = Field(None, description="layer range such as '1-2' (null = attribution.modules.layers)")
        solver: Literal["auto", "explicit", "cg"] = Field("auto", description="explicit: build H and solve; cg: "
                                                          "conjugate gradient on HVPs; auto: explicit up to "
                                                          "explicit_max_params")
        damping: float | None = Field(None, ge=0, description="absolute λ (null = damping_scale x mean Hessian eigenvalue)")
        damping_scale: float = Field(HEURISTIC_DAMPING_SCALE, description="heuristic damping when damping is null")
        max_params: int = Field(200_000, description="refuse when the selected weights hold more parameters")
        explicit_max_params: int = Field(4096, description="solver auto: explicit up to this many parameters, else cg")
        cg_tol: float = Field(1e-6, description="conjugate-gradient relative tolerance")
        cg_max_iter: int = Field(100, description="conjugate-gradient iterations at most")
        batch_size: int | None = Field(None, description="rows per Hessian-vector-product batch "
                                       "(null = attribution.batch_size)")
        seed: int = Field(0, description="seed of the Hutchinson trace estimate (cg with null damping)")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.pattern, self.layers, self.solver = o.pattern, o.layers, o.solver
        self.damping, self.damping_scale = o.damping, o.damping_scale
        self.max_params, self.explicit_max_params = o.max_params, o.explicit_max_params
        self.cg_tol, self.cg_max_iter, self.seed = o.cg_tol, o.cg_max_iter, o.seed
        self.batch_size = o.batch_size
        self.info: dict = {}
        self._pq: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None

    def _modules(self, ctx: AttributionContext):
        base = ctx.attribution.modules
        sel = ModuleSelection(
            pattern=self.pattern if self.pattern is not None else base.pattern,
            preset=base.preset,
            layers=self.layers if self.layers is not None else base.layers,
            lora_only=base.lora_only if self.pattern is None else False,
            bias=False,  # the exact Hessian is over the selected weights only
        )
        modules = select_modules(ctx.model, sel)
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

    def fit(self, ctx: AttributionContext) -> None:
        modules, p = self._modules(ctx)
        model = ctx.model
        pad = ctx.tokenizer.pad_token_id or 0
        bs = self.batch_size or ctx.attribution.batch_size
        # identity projection: the exact per-row weight gradients, flattened like the weights
        feat = GradientFeaturizer(model, modules, FactoredProjection(ProjectionConfig(k_in=None, k_out=None)), bias=False)
        rows, _ = feat.featurize(ctx.rows, bs, pad, desc="hessian_influence: row gradients")
        queries, _ = measure_queries(ctx, lambda enc: feat.featurize(enc, bs, pad, desc=False))
        if any(is_conv1d(m) for _, m in modules):  # features are out x in; Conv1D weights in x out
            rows, queries = (_weight_layout(x, feat.shapes, modules) for x in (rows, queries))
        params = [m.weight for _, m in modules]
        n = len(ctx.rows)
        batches = [
            {k: v.to(params[0].device) for k, v in pad_batch(ctx.rows.input_ids[s : s + bs], ctx.rows.labels[s : s + bs], pad).items()}
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

    def score(self, ctx: AttributionContext) -> np.ndarray:
        if self._pq is None:
            self.fit(ctx)
        return (self._pq @ self._rows.double().T).numpy()

    def describe(self) -> dict[str, str]:
        d = super().describe()
        if self.info:
            d["curvature"] = ", ".join(f"{k}={v}" for k, v in self.info.items() if k != "modules")
        return d
