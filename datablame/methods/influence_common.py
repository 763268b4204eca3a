"""Shared machinery of the projected influence methods (`ekfac`, `kfac`, `diag_influence`).

Not a method itself (registers nothing): it fits, saves and reloads a preconditioner from
`datablame.curvature` in the run's projected gradient-feature space, and scores

    score[q, r] = g_qᵀ (F + λI)⁻¹ g_r

with g the projected gradients of `gradient_features(inputs)`. Sign: higher = up-weighting
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
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, StrictBool

from datablame.curvature import (
    HEURISTIC_DAMPING_SCALE,
    DiagonalPreconditioner,
    EkfacPreconditioner,
    KfacPreconditioner,
    Preconditioner,
    collect_kronecker_stats,
    factor_path,
    load_preconditioner,
)
from datablame.methods.base import AttributionInputs, Method, MethodOptions
from datablame.methods.grad_align import GradFeatures, featurizer_for, gradient_features
from datablame.models.tokenize import Encoded
from datablame.store.rows import StoreRows, block_rows_for
from datablame.utils.io import sha256_strings

log = logging.getLogger("datablame")
FACTOR_FORMAT = 1


def curvature_identity(inputs: AttributionInputs, kind: str, fisher: str, fit_rows: int | None, seed: int) -> dict[str, Any]:
    """What must match for saved factors to stand in for freshly fitted ones."""
    feat = featurizer_for(inputs)
    return {
        "format": FACTOR_FORMAT,
        "kind": kind,
        "model": inputs.cache.get("model_info", {}).get("fingerprint"),
        "data": inputs.corpus.fingerprint(),
        "modules": sha256_strings(f"{n}:{o}x{i}" for n, o, i in feat.shapes),
        "projection": inputs.attribution.projection.model_dump(mode="json"),
        "max_length": inputs.model_cfg.max_length,
        "loss_on": inputs.model_cfg.loss_on,
        "fisher": fisher,
        "fit_rows": fit_rows,
        "seed": seed,
    }


def _fit_indices(n: int, fit_rows: int | None, seed: int) -> np.ndarray | None:
    """Rows used to fit the curvature: all (None) or a seeded sample, in corpus order."""
    if fit_rows is None or fit_rows >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, fit_rows, replace=False))


def _subset(enc: Encoded, idx: np.ndarray | None) -> Encoded:
    if idx is None:
        return enc
    return Encoded([enc.input_ids[i] for i in idx], [enc.labels[i] for i in idx])


def _share_row_features(inputs: AttributionInputs, rows: torch.Tensor, losses: torch.Tensor) -> None:
    """The covariance pass computed every row's gradient feature (empirical Fisher, all rows):
    hand them to `gradient_features` instead of featurizing the rows a second time."""
    if "grad_features" in inputs.cache or "feature_store" in inputs.cache:
        return
    feat = featurizer_for(inputs)
    pad = inputs.tokenizer.pad_token_id or 0
    queries, q_losses = feat.featurize(inputs.query_rows, inputs.attribution.batch_size, pad, desc=False)
    inputs.cache["grad_features"] = GradFeatures(rows, queries, losses, q_losses, feat.shapes)


def _kronecker_pass(inputs: AttributionInputs, identity: dict, fit_idx: np.ndarray | None, fisher: str, seed: int):
    """Covariances (+ the fitting rows' features) of one run, shared by kfac and ekfac."""
    key = "curvature_pass:" + sha256_strings([repr(sorted((k, str(v)) for k, v in identity.items() if k != "kind"))])
    if key not in inputs.cache:
        feat = featurizer_for(inputs)
        pad = inputs.tokenizer.pad_token_id or 0
        stats, feats, losses = collect_kronecker_stats(
            feat, _subset(inputs.rows, fit_idx), batch_size=inputs.attribution.batch_size, pad_id=pad,
            fisher=fisher, seed=seed, desc="curvature: covariances + row gradients",
        )
        if fisher == "empirical" and fit_idx is None:
            _share_row_features(inputs, feats, losses)
        inputs.cache[key] = (stats, feats)
    return inputs.cache[key]


def fit_preconditioner(
    inputs: AttributionInputs, kind: str, *, fisher: str = "empirical", fit_rows: int | None = None,
    seed: int = 0, reuse: bool = True,
) -> Preconditioner:
    """Load matching saved factors or fit them (and save under `inputs.work_dir`)."""
    identity = curvature_identity(inputs, kind, fisher, fit_rows, seed)
    mem_key = "curvature:" + sha256_strings([repr(sorted((k, str(v)) for k, v in identity.items()))])
    if mem_key in inputs.cache:
        return inputs.cache[mem_key]
    path = factor_path(inputs.work_dir, kind) if inputs.work_dir is not None else None
    cacheable = identity["model"] is not None and path is not None
    if reuse and cacheable and path.is_file():
        try:
            pre, saved = load_preconditioner(path)
        except Exception as err:  # noqa: BLE001 - a damaged cache is refitted, never fatal
            log.warning("ignoring unreadable curvature factors %s (%s)", path, err)
        else:
            if saved == identity:
                log.info("reusing %s factors from %s", kind, path)
                inputs.cache[mem_key] = pre
                return pre
            changed = [k for k in identity if saved.get(k) != identity[k]] or ["model/data/projection"]
            log.info("curvature factors in %s were fitted for another %s (changed since); refitting",
                     path, ", ".join(changed))
    fit_idx = _fit_indices(len(inputs.rows), fit_rows, seed)
    meta = {"fisher": fisher, "fit_rows": len(inputs.rows) if fit_idx is None else len(fit_idx)}
    shapes = featurizer_for(inputs).shapes
    if kind == "diagonal":
        if fisher == "empirical":
            rows = gradient_features(inputs).rows
            rows = rows if fit_idx is None else rows[torch.as_tensor(fit_idx)]
        else:
            rows = _kronecker_pass(inputs, identity, fit_idx, fisher, seed)[1]
        pre: Preconditioner = DiagonalPreconditioner.fit(rows, shapes, meta)
    elif kind in ("kfac", "ekfac"):
        stats, rows = _kronecker_pass(inputs, identity, fit_idx, fisher, seed)
        pre = KfacPreconditioner.fit(stats, shapes, meta)
        if kind == "ekfac":
            pre = EkfacPreconditioner.from_kfac(pre, rows)
    else:  # pragma: no cover - subclasses fix the kind
        raise ValueError(kind)
    if cacheable:
        pre.save(path, identity)
    inputs.cache[mem_key] = pre
    return pre


NORMALIZED_UNIT = ("relative influence (normalize: true): cosine of the query and row gradients in the "
                   "(F + λI)⁻¹ metric, unitless in [-1, 1]")


class ProjectedInfluence(Method):
    """Base of the influence methods that precondition projected gradient features."""

    kind: ClassVar[str]
    family = "influence"
    unit = ("nats of query-loss decrease per unit extra weight on the row in the mean training "
            "objective (removing the row raises the query loss by ~score / n_rows)")

    class Options(MethodOptions):
        damping: float | None = Field(None, ge=0, description="absolute damping λ in Fisher units (null = "
                                      "damping_scale x mean eigenvalue per module)")
        damping_scale: float = Field(HEURISTIC_DAMPING_SCALE, gt=0, description="heuristic damping when damping is null")
        fisher: Literal["empirical", "true"] = Field("empirical", description="empirical: the rows' own labels; "
                                                     "true: labels sampled from the model")
        fit_rows: int | None = Field(None, ge=1, description="rows that fit the curvature (null = all; else a seeded sample)")
        seed: int = Field(0, description="seed of the fitting sample and of sampled labels")
        reuse: StrictBool = Field(True, description="reuse saved factors when their identity matches")
        normalize: StrictBool = Field(False, description="relative influence: cosine in the (F + λI)⁻¹ metric, "
                                      "unitless in [-1, 1]")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.damping, self.damping_scale = o.damping, o.damping_scale
        self.fisher, self.fit_rows, self.seed, self.reuse = o.fisher, o.fit_rows, o.seed, o.reuse
        self.normalize = o.normalize
        self.preconditioner: Preconditioner | None = None

    def fit(self, inputs: AttributionInputs) -> None:
        self.preconditioner = fit_preconditioner(
            inputs, self.kind, fisher=self.fisher, fit_rows=self.fit_rows, seed=self.seed, reuse=self.reuse
        )

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        if self.preconditioner is None:
            self.fit(inputs)
        g = gradient_features(inputs)
        pre = self.preconditioner
        # rows are read one block at a time (a feature store's rows are never loaded whole)
        block = block_rows_for(g.queries.shape[1]) if not isinstance(g.rows, StoreRows) else g.rows.block_rows
        scores = pre.scores(g.queries, g.rows, self.damping, self.damping_scale, chunk=block)
        if self.normalize:  # relative influence: rows with large gradients no longer win every query
            q_self = pre.self_influence(g.queries, self.damping, self.damping_scale)
            r_self = pre.self_influence(g.rows, self.damping, self.damping_scale, chunk=block)
            scores /= q_self.clamp_min(1e-300).sqrt()[:, None] * r_self.clamp_min(1e-300).sqrt()[None, :]
        return scores.numpy()

    def describe(self) -> dict[str, str]:
        d = super().describe()
        d["damping"] = f"heuristic: {self.damping_scale:g} x mean eigenvalue per module" if self.damping is None else str(self.damping)
        d["fisher"] = self.fisher
        if self.normalize:
            d["unit"] = NORMALIZED_UNIT
        d["normalize"] = str(self.normalize).lower()
        return d
