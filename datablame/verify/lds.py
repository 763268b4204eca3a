"""`datablame lds`: the linear datamodeling score of attribution methods (TRAK, Park et al. 2023).

M subset models are trained from the run's initial weights on random alpha-fraction subsets
of the rows (exactly round(alpha * N) rows each; subset j is drawn from (lds.seed, j), so
raising M keeps the first subsets). For query q and subset S_j, a method predicts the
query's goodness as the sum of its scores over the subset's rows, sum_{r in S_j} score[q, r];
the LDS of q is the Spearman correlation, over the M subsets, between that prediction and
the subset model's actual log-likelihood of the completion (minus the loss, so a positive
LDS means the method's sign is right: higher score = row pushes the loss down). The table
reports the mean over queries with a bootstrap CI (resampling queries); a query on which a
method's prediction is constant (no variation) gets no LDS and is counted.

Every subset model is trained once: its query losses are cached under <run>/lds/jobs (one
JSON per subset and seed; the format is described in datablame/methods/datamodels.py), so
every method -- and `datamodels`, which is fitted on those records -- reuses them, and an
interrupted sweep resumes. Methods that are fitted on the sweep itself (`datamodels`) are
scored out of fold: K-fold over subsets, each fold predicted by a fit on the other folds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datablame import __version__
from datablame.config import RayConfig, RunConfig
from datablame.errors import DatablameError
from datablame.layout import RunLayout
from datablame.utils.io import atomic_write_json
from datablame.verify.common import (
    check_methods,
    machine_facts,
    method_scores,
    retrain_context,
    with_flags,
)
from datablame.verify.retrain import RetrainJob
from datablame.verify.stats import bootstrap_mean, spearman
from datablame.verify.sweep import run_jobs

log = logging.getLogger("datablame")

CROSS_FIT_FOLDS = 5


@dataclass
class LDSReport:
    data: dict[str, Any]  # what lds.json holds
    paths: dict[str, Path]

    def table(self) -> list[dict[str, Any]]:
        return self.data["table"]


def subset_masks(n_rows: int, alpha: float, num_subsets: int, seed: int) -> np.ndarray:
    """[M, N] boolean masks with exactly round(alpha * N) rows each; subset j depends only on
    (seed, j)."""
    size = int(round(alpha * n_rows))
    if not 0 < size < n_rows:
        raise DatablameError(
            f"lds.alpha={alpha} leaves {size} of {n_rows} rows per subset", "choose alpha so that 0 < alpha*N < N"
        )
    masks = np.zeros((num_subsets, n_rows), dtype=bool)
    for j in range(num_subsets):
        rng = np.random.default_rng([seed, j, 0x1D5])
        masks[j, rng.choice(n_rows, size=size, replace=False)] = True
    return masks


def lds_scores(
    scores: np.ndarray, masks: np.ndarray, losses: np.ndarray
) -> np.ndarray:
    """Per-query LDS: Spearman over subsets of (masks @ scores[q]) and -losses[:, q].

    scores [Q, N], masks [M, N], losses [M, Q] -> [Q] (nan where undefined)."""
    pred = masks.astype(np.float64) @ scores.T  # [M, Q]
    return np.array([spearman(pred[:, q], -losses[:, q]) for q in range(scores.shape[0])])


def _fold_predictions(cfg: RunConfig, inputs, name: str, keys: list[list[str]], masks: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions [M, Q] of a method fitted on the sweep (holdout = one fold)."""
    from datablame.methods import run_method

    m_count = len(keys)
    folds = np.array_split(np.arange(m_count), min(CROSS_FIT_FOLDS, m_count))
    pred = np.zeros((m_count, len(inputs.queries)))
    for fold in folds:
        holdout = [k for j in fold for k in keys[j]]
        s = run_method(inputs, name, {**cfg.attribution.options.get(name, {}), "holdout": holdout}).scores
        pred[fold] = masks[fold].astype(np.float64) @ s.T
    return pred


def lds(
    cfg: RunConfig,
    methods: Sequence[str] | None = None,
    *,
    num_subsets: int | None = None,
    alpha: float | None = None,
    ray: RayConfig | None = None,
    progress: bool = True,
) -> LDSReport:
    """Train (or reuse) the subset models, score every method, write <run>/lds/lds.json + lds.png."""
    from datablame.inputs import prepare_inputs
    from datablame.methods import REGISTRY
    from datablame.runs import prepare_run_dir

    t0 = time.perf_counter()
    machine_start = machine_facts()
    overrides = {k: v for k, v in {"num_subsets": num_subsets, "alpha": alpha}.items() if v is not None}
    lcfg = with_flags(cfg.lds, overrides, {"num_subsets": "--subsets", "alpha": "--alpha"})
    methods = list(methods or lcfg.methods or cfg.attribution.method_names())
    check_methods(cfg, methods)
    run_dir = prepare_run_dir(cfg)
    inputs = prepare_inputs(cfg)[0]
    prep_s = time.perf_counter() - t0
    corpus, queries = inputs.corpus, inputs.queries
    masks = subset_masks(len(corpus), lcfg.alpha, lcfg.num_subsets, lcfg.seed)
    seeds = list(lcfg.seeds or [cfg.training.seed])
    ctx = retrain_context(cfg, run_dir, corpus, queries, generate=False, epochs=lcfg.epochs)
    jobs = [RetrainJob(s, removed=tuple(int(i) for i in np.flatnonzero(~masks[j])), kind="lds-subset",
                       tags={"subset": j, "alpha": lcfg.alpha, "subset_seed": lcfg.seed})
            for j in range(len(masks)) for s in seeds]
    outcome = run_jobs(ctx, jobs, RunLayout(run_dir).lds_dir, ray or lcfg.ray, desc="LDS subsets", progress=progress)
    sweep_s = outcome.seconds
    losses = np.zeros((len(masks), len(queries)))
    keys: list[list[str]] = [[] for _ in masks]
    for i in range(len(jobs)):
        j = i // len(seeds)
        losses[j] += np.asarray(outcome.record(i)["loss"]) / len(seeds)
        keys[j].append(outcome.keys[i])

    t1 = time.perf_counter()
    plain = [m for m in methods if not getattr(REGISTRY[m], "fits_on_lds_sweep", False)]
    fitted = [m for m in methods if m not in plain]
    scores, described, errors = method_scores(cfg, inputs, plain)
    per_query: dict[str, np.ndarray] = {m: lds_scores(s, masks, losses) for m, s in scores.items()}
    for m in fitted:
        try:
            pred = _fold_predictions(cfg, inputs, m, keys, masks)
        except DatablameError as err:
            errors[m] = err.problem
            continue
        per_query[m] = np.array([spearman(pred[:, q], -losses[:, q]) for q in range(len(queries))])
        described[m] = {"name": m, "note": f"out of fold ({min(CROSS_FIT_FOLDS, len(masks))}-fold over subsets)"}
    score_s = time.perf_counter() - t1

    table = []
    for m in methods:
        if m not in per_query:
            table.append({"method": m, "error": errors.get(m, "no scores")})
            continue
        vals = per_query[m]
        iv = bootstrap_mean(vals, confidence=lcfg.confidence, n_boot=lcfg.bootstrap, seed=lcfg.seed)
        table.append({"method": m, "lds": iv.mean, "ci_low": iv.low, "ci_high": iv.high,
                      "queries": iv.n, "undefined_queries": int(np.sum(~np.isfinite(vals))),
                      "per_query": {q.query_id: float(v) for q, v in zip(queries, vals, strict=True)}})
    data = {
        "kind": "lds", "version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run_dir),
        "settings": {**lcfg.model_dump(mode="json", exclude={"ray", "methods"}), "seeds": seeds,
                     "subset_rows": int(masks[0].sum()), "rows": len(corpus), "queries": len(queries)},
        "definition": "per query: Spearman over subset models of (sum of the method's scores over "
                      "the subset's rows) vs (minus the subset model's completion loss); mean over "
                      "queries, percentile bootstrap CI over queries",
        "table": table, "methods": described, "method_errors": errors,
        "subset_loss": {"mean": losses.mean(axis=0).tolist(), "sd": losses.std(axis=0).tolist(),
                        "query_ids": [q.query_id for q in queries]},
        "design": {"subset_models": len(jobs), "trained": outcome.trained, "reused": outcome.reused,
                   "runner": outcome.runner, "ray_cpus": outcome.cpus},
        "timing": {"wall_s": time.perf_counter() - t0, "prepare_s": prep_s, "sweep_s": sweep_s,
                   "scoring_s": score_s,
                   "train_s_per_model": float(np.mean([r["train_seconds"] for r in outcome.results.values()]))},
        "machine": {"start": machine_start, "end": machine_facts()},
    }
    layout = RunLayout(run_dir)
    paths = {"json": layout.lds_json, "plot": layout.lds_plot}
    from datablame.verify.plots import plot_lds

    plot_lds(table, paths["plot"], title=f"LDS, {len(masks)} subsets of {lcfg.alpha:g}, {len(queries)} queries")
    data["plots"] = {"lds": str(paths["plot"])}
    atomic_write_json(paths["json"], data)
    return LDSReport(data, paths)
