"""TRAK (Park et al. 2023): projected features, a (ΦᵀΦ + λI)⁻¹ kernel per model, ensembled.

For each model m of the ensemble (the run's checkpoints by default, or independently
trained models given in `models`), Φ_m holds the projected gradients of the model output
f of every training row (the `gradient_features` modules and factored projection, taken at
that model via `checkpoint_features`; `proj_dim` adds TRAK's dense JL step on top) and

    score[q, r] = mean_m( φ_q^m (Φ_mᵀΦ_m + λ_m I)⁻¹ φ_r^mᵀ ) · mean_m( Q_r^m )

which is TRAK's estimator exactly as `traker` computes it (scores averaged over models,
then multiplied by the averaged out-to-loss term Q).

Model output for a language model. TRAK's classification output is the margin
f = log(p / (1 - p)) with out-to-loss term Q = ∂ℓ/∂f = -(1 - p). For a completion we take
p̄ = exp(-ℓ), the geometric-mean probability of the completion tokens (ℓ = mean
completion-token NLL, our training loss), and f = log(p̄ / (1 - p̄)) (`output: margin`,
default). f is a function of ℓ only, so ∇f = -∇ℓ / (1 - p̄) exactly and the features are
our loss gradients rescaled per row; Q_r = 1 - p̄_r. For a one-token completion this is
exactly TRAK's classification margin. `output: logprob` uses f = -ℓ (Φ = loss gradients,
Q = 1): no per-row reweighting.

Kernel: with n rows and D feature dims the solve happens in the smaller of the two spaces
(D x D, or n x n through φ_q(ΦᵀΦ + λI)⁻¹Φᵀ = φ_qΦᵀ(ΦΦᵀ + λI)⁻¹, the same number). λ_m =
`damping` x the mean non-zero eigenvalue of Φ_mᵀΦ_m (trace / min(n, D)); eigenvalues below
1e-10 of the largest are dropped (a pseudo-inverse, so damping 0 is allowed even when
D > n, where ΦᵀΦ is singular).

Sign: higher = training on the row raised the query's output f (lowered its loss). Unit:
TRAK's linearised-model estimate of the query's output change, in f's units (log-odds of
p̄) per unit of the row's weight in the training set; only comparable within one run.

Options (`attribution.options.trak`): checkpoints ("all" | "last" | N | list of steps),
models (list of model directories: ensemble over independently trained models instead),
output ("margin" | "logprob"), damping (relative, default 0.01), proj_dim (null = the
factored features as they are; an int adds a seeded dense Gaussian projection), seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from datablame.errors import DatablameError
from datablame.features.checkpoints import (
    checkpoint_features,
    features_of_model,
    load_checkpoint_model,
    select_checkpoints,
)
from datablame.features.context import AttributionContext
from datablame.features.gradients import GradFeatures, gradient_features
from datablame.methods.base import Method, MethodOptions, register
from datablame.methods.tracin import Checkpoints
from datablame.models.tokenize import Encoded, pad_batch, per_row_loss
from datablame.store.rows import StoreRows, row_blocks

log = logging.getLogger("datablame")

OUTPUTS = ("margin", "logprob")
_RCOND = 1e-10
_PROJ_BLOCK = 4096


def dense_projection(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """x [N, D] @ R with R [D, k] ~ N(0, 1/k), generated in row blocks of D (bounded memory).

    Block b of R depends only on (seed, b), so rows and queries get the same R.
    """
    out = torch.zeros(x.shape[0], k, dtype=torch.float64)
    for b, start in enumerate(range(0, x.shape[1], _PROJ_BLOCK)):
        stop = min(start + _PROJ_BLOCK, x.shape[1])
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
        r = torch.randn(stop - start, k, generator=gen, dtype=torch.float64) / k**0.5
        out += x[:, start:stop].double() @ r
    return out


def kernel_scores(phi_rows: torch.Tensor, phi_queries: torch.Tensor, damping: float) -> torch.Tensor:
    """φ_q (ΦᵀΦ + λI)⁺ φ_rᵀ for all queries and rows [Q, R] (float64), λ = damping·tr/min(n, D)."""
    rows, queries = phi_rows.double(), phi_queries.double()
    n, d = rows.shape
    if n <= d:  # n x n: φ_q Φᵀ (ΦΦᵀ + λI)⁺
        gram = rows @ rows.T
        cross = queries @ rows.T
    else:  # D x D: (φ_q) (ΦᵀΦ + λI)⁺ Φᵀ
        gram = rows.T @ rows
        cross = None
    lam = damping * float(torch.trace(gram)) / min(n, d)
    evals, evecs = torch.linalg.eigh(gram)
    keep = evals > _RCOND * max(float(evals.max()), 0.0)
    if not bool(keep.any()):
        return torch.zeros(len(queries), n, dtype=torch.float64)
    v, inv = evecs[:, keep], 1.0 / (evals[keep] + lam)
    if cross is not None:
        return ((cross @ v) * inv) @ v.T
    return (((queries @ v) * inv) @ v.T) @ rows.T


def forward_losses(model: torch.nn.Module, encoded: Encoded, batch_size: int, pad_id: int) -> torch.Tensor:
    """Per-row mean completion NLL [N] (forward passes only)."""
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(encoded), batch_size):
                b = pad_batch(encoded.input_ids[s : s + batch_size], encoded.labels[s : s + batch_size], pad_id)
                b = {k: v.to(device) for k, v in b.items()}
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                out.append(per_row_loss(logits, b["labels"]).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


@register
class Trak(Method):
    name = "trak"
    family = "influence"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = "TRAK estimate of the query's output change (log-odds of the completion), ensemble mean"
    cost = "one forward+backward per row per ensemble model, plus an eigendecomposition of min(n, D)^2"

    class Options(MethodOptions):
        checkpoints: Checkpoints = Field("all", description="ensemble of the run's checkpoints: 'all', 'last', "
                                         "N (the last N) or a list of steps")
        models: list[str] | None = Field(None, description="model directories to ensemble over instead of checkpoints")
        output: Literal[OUTPUTS] = Field("margin", description="model output f: log-odds of the completion "
                                         "(margin) or minus its loss (logprob)")
        damping: float = Field(0.01, ge=0, description="λ relative to the mean non-zero eigenvalue of ΦᵀΦ")
        proj_dim: int | None = Field(None, ge=1, description="dense Gaussian projection on top of the features "
                                     "(null = none)")
        seed: int = Field(0, description="seed of the dense projection")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.checkpoints, self.models = o.checkpoints, list(o.models) if o.models else None
        self.output, self.damping, self.proj_dim, self.seed = o.output, o.damping, o.proj_dim, o.seed

    def _members(self, ctx: AttributionContext) -> list[tuple[str, object]]:
        """(label, what to featurize) per ensemble member."""
        if self.models:
            missing = [m for m in self.models if not Path(m).is_dir()]
            if missing:
                raise DatablameError(f"trak models {missing} do not exist", "fix attribution.options.trak.models")
            return [(Path(m).name or m, Path(m)) for m in self.models]
        if not ctx.checkpoints and self.checkpoints in ("all", "last"):
            log.info("trak: the run kept no checkpoints; using the attributed model alone")
            return [("final", None)]
        return [(i.path.name, i) for i in select_checkpoints(ctx, self.checkpoints)]

    def _features(self, ctx: AttributionContext, member: object, label: str) -> GradFeatures:
        if member is None:
            return gradient_features(ctx)
        if isinstance(member, Path):
            key = str(member)
            if key not in ctx.shared.grads_by_model:
                model = load_checkpoint_model(ctx, member)
                ctx.shared.grads_by_model[key] = features_of_model(ctx, model, label=f"model-{label}")
                del model
            return ctx.shared.grads_by_model[key]
        return checkpoint_features(ctx, member)

    def fit(self, ctx: AttributionContext) -> None:
        for label, member in self._members(ctx):
            self._features(ctx, member, label)

    def _phi(self, g: GradFeatures, ctx: AttributionContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Φ rows, φ queries, Q rows) of one model."""
        queries = g.queries.double()
        if self.proj_dim is not None and self.proj_dim < queries.shape[1]:  # row by row: blocks of a store
            rows = torch.cat([dense_projection(b, self.proj_dim, self.seed) for _, b in row_blocks(g.rows)])
            queries = dense_projection(queries, self.proj_dim, self.seed)
        else:  # TRAK's kernel needs every Φ row at once (use proj_dim to bound it)
            rows = (g.rows.materialize() if isinstance(g.rows, StoreRows) else g.rows).double()
        if self.output == "logprob":  # f = -ℓ: ∇f = -g, Q = 1
            return -rows, -queries, torch.ones(len(rows), dtype=torch.float64)
        row_losses = g.row_losses
        if torch.isnan(row_losses).any():  # rows read from a feature store without losses
            row_losses = forward_losses(ctx.model, ctx.rows, ctx.attribution.batch_size,
                                        ctx.tokenizer.pad_token_id or 0)
        q_rows = (-torch.expm1(-row_losses.double())).clamp_min(1e-6)  # 1 - p̄
        if ctx.query_measure is not None:  # a measured behaviour has no one completion's p̄: f_q = -its loss
            q_queries = torch.ones(len(queries), dtype=torch.float64)
        else:
            q_queries = (-torch.expm1(-g.query_losses.double())).clamp_min(1e-6)
        return -rows / q_rows[:, None], -queries / q_queries[:, None], q_rows

    def score(self, ctx: AttributionContext) -> np.ndarray:
        members = self._members(ctx)
        total = torch.zeros(len(ctx.queries), len(ctx.rows), dtype=torch.float64)
        q_sum = torch.zeros(len(ctx.rows), dtype=torch.float64)
        for label, member in members:
            phi_rows, phi_queries, q_rows = self._phi(self._features(ctx, member, label), ctx)
            total += kernel_scores(phi_rows, phi_queries, self.damping)
            q_sum += q_rows
        m = len(members)
        return ((total / m) * (q_sum / m)[None, :]).numpy()
