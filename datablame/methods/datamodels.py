"""Datamodels (Ilyas et al. 2022; seed 001 part 6): a linear regression from "which rows were
in the training set" to the query's behaviour, fitted on models actually retrained on random
subsets. One weight per training row and query.

Score = the regression coefficient of the row's inclusion (0/1) when predicting minus the
query's completion loss of the subset model: the loss decrease, in nats per completion
token, that including the row predicts. Sign: higher = the row pushed the query's loss down
(the library default). Unit: nats/token.

Regression: `ridge` (default) with the penalty chosen per query by efficient leave-one-out
cross-validation over a log grid (`alpha: null`), or fixed (`alpha: <float>`); `lasso`
(sparse; penalty by `min(5, M)`-fold CV or fixed). Every subset has the same size, so the
weights are identified only up to a constant added to all rows (it moves into the
intercept): ridge returns the minimum-norm solution (weights centred near zero), lasso the
sparsest one. Rankings and LDS do not depend on that constant. Datamodels need many subset models: with
M subsets and N rows, M << N leaves the weights mostly regularisation (the ridge solution is
then close to "mean behaviour with the row minus without"), so their LDS grows with M.

Cost: no gradients here; it needs the subset models of `datablame lds` (M trainings, cached)
and fits one regression per query in milliseconds.

Inputs (this method sits below `datablame.verify` and reads its files, not its code): every
`<run_dir>/lds/jobs/*.json` written by the LDS sweep is one subset model with keys
`kind` ("lds-subset"), `key`, `n_rows`, `kept_mask` (base64 of numpy.packbits of the
boolean row mask), `corpus` (Corpus.fingerprint()), `identity.queries` (sha256 of the JSON
list of [query_id, prompt, completion], first 16 hex digits) and `loss` (per query, nats/
token). Models of the same subset with several seeds are averaged. Records of another corpus
or query set are ignored; when none fit, the error names `datablame lds`.

Options (`attribution.options.datamodels`): regression, alpha, holdout (job keys to leave
out of the fit: the LDS scores this method out of fold with it), min_subsets (default 3).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.layout import RunLayout
from datablame.methods.base import Method, MethodOptions, register

RIDGE_GRID = np.logspace(-2, 5, 15)


def queries_hash(queries: Sequence[tuple[str, str, str]]) -> str:
    """The query-set hash the LDS sweep records (same JSON as verify.retrain)."""
    return hashlib.sha256(json.dumps([list(q) for q in queries], ensure_ascii=False).encode()).hexdigest()[:16]


def _unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def fit_datamodel(
    masks: np.ndarray, losses: np.ndarray, *, regression: str = "ridge", alpha: float | None = None
) -> np.ndarray:
    """Weights [Q, N] from subset masks [M, N] (bool) and their query losses [M, Q]:
    y = -loss ~ b + masks @ w, so w > 0 = including the row lowers the loss."""
    from sklearn.linear_model import Lasso, LassoCV, Ridge, RidgeCV

    x = np.asarray(masks, dtype=np.float64)
    y = -np.asarray(losses, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if regression == "ridge":
        model = Ridge(alpha=alpha) if alpha is not None else RidgeCV(alphas=RIDGE_GRID, alpha_per_target=True)
        return np.atleast_2d(model.fit(x, y).coef_).reshape(y.shape[1], x.shape[1])
    if regression == "lasso":
        out = np.zeros((y.shape[1], x.shape[1]))
        for q in range(y.shape[1]):
            if alpha is not None:
                model = Lasso(alpha=alpha, max_iter=20000)
            else:
                model = LassoCV(cv=min(5, len(x)), max_iter=20000, random_state=0)
            out[q] = model.fit(x, y[:, q]).coef_
        return out
    raise DatablameError(f"datamodels regression {regression!r} is unknown", "use ridge or lasso")


def load_sweep(
    run_dir: Path, corpus_fingerprint: str, n_rows: int, qhash: str, holdout: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Masks [M, N] and mean losses [M, Q] of the LDS subset models matching this corpus and
    query set (models of one subset with several seeds averaged)."""
    records = []
    for path in sorted(RunLayout(run_dir).lds_jobs_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if rec.get("kind") == "lds-subset" and rec.get("corpus") == corpus_fingerprint:
            records.append(rec)
    # a held-out subset is left out with every model of it (other seeds, repeated draws)
    skip = set(holdout)
    held_masks = {rec["kept_mask"] for rec in records if rec.get("key") in skip}
    groups: dict[str, dict[str, list[np.ndarray]]] = {}
    other_queries = 0
    for rec in records:
        if rec.get("key") in skip or rec["kept_mask"] in held_masks:
            continue
        ident = rec.get("identity", {})
        if ident.get("queries") != qhash:
            other_queries += 1
            continue
        setting = json.dumps({k: v for k, v in ident.items() if k != "queries"}, sort_keys=True)
        groups.setdefault(setting, {}).setdefault(rec["kept_mask"], []).append(np.asarray(rec["loss"], dtype=float))
    if not groups:
        why = (f" ({other_queries} subset models were trained for other queries)" if other_queries else "")
        raise DatablameError(
            f"no LDS subset models for this corpus and these queries under {RunLayout(run_dir).lds_dir}{why}",
            "run `datablame lds --config ...` first (datamodels are fitted on its retrained subsets)",
        )
    subsets = max(groups.values(), key=len)  # one training setting (e.g. epochs); the largest
    masks = np.stack([_unpack(m, n_rows) for m in subsets])
    losses = np.stack([np.mean(v, axis=0) for v in subsets.values()])
    return masks, losses


@register
class DataModels(Method):
    name = "datamodels"
    family = "counterfactual"
    unit = "nats/token of query loss removed by including the row (linear datamodel coefficient)"
    cost = "no gradients; M retrained subset models from `datablame lds` (cached), one regression per query"
    fits_on_lds_sweep: ClassVar[bool] = True  # LDS scores it out of fold

    class Options(MethodOptions):
        regression: Literal["ridge", "lasso"] = Field("ridge", description="ridge (dense) or lasso (sparse) regression")
        alpha: float | None = Field(None, description="regularisation penalty (null = chosen by cross-validation)")
        holdout: list[str] | None = Field(None, description="LDS job keys left out of the fit (LDS sets it per fold)")
        min_subsets: int = Field(3, description="refuse to fit on fewer LDS subset models")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.regression, self.alpha = o.regression, o.alpha
        self.holdout, self.min_subsets = list(o.holdout or []), o.min_subsets
        self.subsets: int | None = None  # subset models the last `score` was fitted on

    def score(self, ctx: AttributionContext) -> np.ndarray:
        if ctx.run_dir is None:
            raise DatablameError("datamodels need the run directory of an LDS sweep", "run `datablame lds` first")
        qh = queries_hash([(q.query_id, q.prompt, q.completion or "") for q in ctx.queries])
        masks, losses = load_sweep(ctx.run_dir, ctx.corpus.fingerprint(), len(ctx.corpus), qh, self.holdout)
        if len(masks) < self.min_subsets:
            raise DatablameError(
                f"only {len(masks)} LDS subset models to fit datamodels on (need {self.min_subsets})",
                "run `datablame lds` with more lds.num_subsets",
            )
        w = fit_datamodel(masks, losses, regression=self.regression, alpha=self.alpha)
        self.subsets = len(masks)
        return w.astype(np.float64)

    def describe(self) -> dict[str, Any]:
        d = {**super().describe(), "regression": self.regression}
        if self.subsets is not None:
            d["subsets"] = self.subsets
        return d
