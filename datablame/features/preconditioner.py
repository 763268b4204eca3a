"""The preconditioner of the projected influence methods (`ekfac`, `kfac`, `diag_influence`).

Fits, saves and reloads a preconditioner from `datablame.curvature` in the run's projected
gradient-feature space; the methods (`methods/kfac.py` `ProjectedInfluence`) then score

    score[q, r] = g_qᵀ (F + λI)⁻¹ g_r

with g the projected gradients of `gradient_features(ctx)`. Sign: higher = up-weighting
(training on) row r lowers query q's loss. Unit: nats of query-loss decrease per unit of
extra weight on the row in the mean training objective; removing the row raises the query
loss by about score / n_rows.

`normalize: true` (every method here) divides by the query's and the row's self-influence,

    score[q, r] = g_qᵀ (F + λI)⁻¹ g_r / sqrt(g_qᵀ (F + λI)⁻¹ g_q · g_rᵀ (F + λI)⁻¹ g_r)

the cosine of the two gradients in the preconditioned metric (relative influence, Barshan
et al. 2020, as TrackStar unit-normalises): same sign, unitless in [-1, 1], and rows whose
large gradients would otherwise top every query's list (high-loss, outlier rows) no longer do.
Cost: one extra preconditioning pass over the row features.

Fitted factors go to `<work_dir>/curvature/<kind>.safetensors` with an identity (model
fingerprint, data fingerprint, modules and shapes, projection, tokenisation, Fisher kind,
fitting rows) and are reused when it matches; damping is applied at scoring time, so
changing it never refits.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from datablame.curvature import (
    DiagonalPreconditioner,
    EkfacPreconditioner,
    KfacPreconditioner,
    Preconditioner,
    collect_kronecker_stats,
    factor_path,
    load_preconditioner,
)
from datablame.features.context import AttributionContext
from datablame.features.gradients import (
    GradFeatures,
    featurizer_for,
    gradient_features,
    measure_queries,
)
from datablame.models.tokenize import Encoded
from datablame.utils.io import sha256_strings

log = logging.getLogger("datablame")
FACTOR_FORMAT = 1


def curvature_identity(ctx: AttributionContext, kind: str, fisher: str, fit_rows: int | None, seed: int) -> dict[str, Any]:
    """What must match for saved factors to stand in for freshly fitted ones (the run's
    feature identity plus how the curvature was fitted)."""
    return ctx.identity().curvature(kind=kind, fisher=fisher, fit_rows=fit_rows, seed=seed, format=FACTOR_FORMAT)


def _fit_indices(n: int, fit_rows: int | None, seed: int) -> np.ndarray | None:
    """Rows used to fit the curvature: all (None) or a seeded sample, in corpus order."""
    if fit_rows is None or fit_rows >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))


def _subset(enc: Encoded, idx: np.ndarray | None) -> Encoded:
    if idx is None:
        return enc
    return Encoded([enc.input_ids[i] for i in idx], [enc.labels[i] for i in idx])


def _share_row_features(ctx: AttributionContext, rows: torch.Tensor, losses: torch.Tensor) -> None:
    """The covariance pass computed every row's gradient feature (empirical Fisher, all rows):
    hand them to `gradient_features` instead of featurizing the rows a second time."""
    if ctx.shared.grads is not None or ctx.store is not None:
        return
    feat = featurizer_for(ctx)
    pad = ctx.tokenizer.pad_token_id or 0
    queries, q_losses = measure_queries(ctx, lambda enc: feat.featurize(enc, ctx.attribution.batch_size, pad,
                                                                        desc=False))
    ctx.shared.grads = GradFeatures(rows, queries, losses, q_losses, feat.shapes)


def _kronecker_pass(ctx: AttributionContext, identity: dict, fit_idx: np.ndarray | None, fisher: str, seed: int):
    """Covariances (+ the fitting rows' features) of one run, shared by kfac and ekfac."""
    key = sha256_strings([repr(sorted((k, str(v)) for k, v in identity.items() if k != "kind"))])
    if key not in ctx.shared.curvature_passes:
        feat = featurizer_for(ctx)
        pad = ctx.tokenizer.pad_token_id or 0
        stats, feats, losses = collect_kronecker_stats(
            feat, _subset(ctx.rows, fit_idx), batch_size=ctx.attribution.batch_size, pad_id=pad,
            fisher=fisher, seed=seed, desc="curvature: covariances + row gradients",
        )
        if fisher == "empirical" and fit_idx is None:
            _share_row_features(ctx, feats, losses)
        ctx.shared.curvature_passes[key] = (stats, feats)
    return ctx.shared.curvature_passes[key]


def fit_preconditioner(
    ctx: AttributionContext, kind: str, *, fisher: str = "empirical", fit_rows: int | None = None,
    seed: int = 0, reuse: bool = True,
) -> Preconditioner:
    """Load matching saved factors or fit them (and save under `ctx.work_dir`)."""
    identity = curvature_identity(ctx, kind, fisher, fit_rows, seed)
    mem_key = sha256_strings([repr(sorted((k, str(v)) for k, v in identity.items()))])
    if mem_key in ctx.shared.preconditioners:
        return ctx.shared.preconditioners[mem_key]
    path = factor_path(ctx.work_dir, kind) if ctx.work_dir is not None else None
    cacheable = identity["model"] is not None and path is not None
    if reuse and cacheable and path.is_file():
        try:
            pre, saved = load_preconditioner(path)
        except Exception as err:  # noqa: BLE001 - a damaged cache is refitted, never fatal
            log.warning("ignoring unreadable curvature factors %s (%s)", path, err)
        else:
            if saved == identity:
                log.info("reusing %s factors from %s", kind, path)
                ctx.shared.preconditioners[mem_key] = pre
                return pre
            changed = [k for k in identity if saved.get(k) != identity[k]] or ["model/data/projection"]
            log.info("curvature factors in %s were fitted for another %s (changed since); refitting",
                     path, ", ".join(changed))
    fit_idx = _fit_indices(len(ctx.rows), fit_rows, seed)
    meta = {"fisher": fisher, "fit_rows": len(ctx.rows) if fit_idx is None else len(fit_idx)}
    shapes = featurizer_for(ctx).shapes
    if kind == "diagonal":
        if fisher == "empirical":
            rows = gradient_features(ctx).rows
            rows = rows if fit_idx is None else rows[torch.as_tensor(fit_idx)]
        else:
            rows = _kronecker_pass(ctx, identity, fit_idx, fisher, seed)[1]
        pre: Preconditioner = DiagonalPreconditioner.fit(rows, shapes, meta)
    elif kind in ("kfac", "ekfac"):
        stats, rows = _kronecker_pass(ctx, identity, fit_idx, fisher, seed)
        pre = KfacPreconditioner.fit(stats, shapes, meta)
        if kind == "ekfac":
            pre = EkfacPreconditioner.from_kfac(pre, rows)
    else:  # pragma: no cover - subclasses fix the kind
        raise ValueError(kind)
    if cacheable:
        pre.save(path, identity)
    ctx.shared.preconditioners[mem_key] = pre
    return pre
