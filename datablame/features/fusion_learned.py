"""Learned evidence fusion: component weights fitted on the run's LDS subset models.

When `datablame lds` has retrained models on random subsets of the rows (masks [M, N], each
subset model's query losses [M, Q]), the components of `fused` can be weighted by how well
they predict those losses instead of by reciprocal ranks. Per query q, each component's
scores are standardised over the rows (z-score), and

    fused[q] = sum_m w_qm z_m[q]       w_q >= 0, sum_m w_qm = 1 (simplex grid, step 0.1)

with w_q the grid point maximising the mean LDS over the OTHER queries (leave-one-query-out:
query q's own subset losses never enter its weights). LDS of a query = Spearman over the
subsets of (mask @ fused scores) vs (minus the subset model's loss), as `datablame lds`.
Ties between grid points go to the one closest to equal weights.

The records are read from `<run>/lds/jobs/*.json` (written by `datablame.verify.sweep`; this
module sits below verify and reads its files, not its code): `kind` "lds-subset", `corpus`
(the corpus fingerprint), `n_rows`, `kept_mask` (base64 of numpy.packbits of the row mask),
`query_ids` and per-query `loss`. Queries are matched by id; models of one subset with
several seeds are averaged.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datablame.errors import DatablameError
from datablame.layout import RunLayout

STEP = 0.1
MIN_SUBSETS = 3
_FIX = "run `datablame lds --config ...` for this run first (or use attribution.options.fused.combine: rrf)"


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each query's scores [Q, N] standardised over the rows; non-finite scores get the query's
    lowest finite z; a constant row of scores becomes 0."""
    s = np.asarray(scores, dtype=np.float64)
    out = np.zeros_like(s)
    for q in range(s.shape[0]):
        ok = np.isfinite(s[q])
        if not ok.any():
            continue
        v = s[q, ok]
        sd = v.std()
        z = (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)
        out[q, ok] = z
        out[q, ~ok] = z.min()
    return out


def simplex_grid(k: int, step: float = STEP) -> np.ndarray:
    """Every weight vector [G, k] with entries in {0, step, ..., 1} summing to 1, ordered from
    the one closest to equal weights outwards (so argmax ties prefer even weights)."""
    n = int(round(1 / step))
    pts = np.array([c for c in itertools.product(range(n + 1), repeat=k) if sum(c) == n], dtype=np.float64) / n
    dist = np.linalg.norm(pts - 1.0 / k, axis=1)
    return pts[np.lexsort((np.arange(len(pts)), np.round(dist, 12)))]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks of each column of x [M, ...] (ties averaged, as scipy's rankdata)."""
    from scipy.stats import rankdata

    return rankdata(x, axis=0)


def spearman_columns(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman correlation of pred[..., M, Q] with target [M, Q] per column: [..., Q]
    (nan where either side is constant)."""
    rp = _ranks(np.moveaxis(pred, -2, 0))
    rp = np.moveaxis(rp, 0, -2)
    rt = _ranks(target)
    rp = rp - rp.mean(axis=-2, keepdims=True)
    rt = rt - rt.mean(axis=0, keepdims=True)
    num = (rp * rt).sum(axis=-2)
    den = np.sqrt((rp**2).sum(axis=-2) * (rt**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), np.nan)


def fit_loo_weights(z: Sequence[np.ndarray], masks: np.ndarray, losses: np.ndarray,
                    step: float = STEP) -> np.ndarray:
    """Weights [Q, K] on the simplex grid: row q maximises the mean LDS over the queries other
    than q. `z`: K standardised component scores [Q, N]; masks [M, N]; losses [M, Q]."""
    m = np.asarray(masks, dtype=np.float64)
    preds = np.stack([m @ np.asarray(zk, dtype=np.float64).T for zk in z])  # [K, M, Q]
    grid = simplex_grid(len(z), step)  # [G, K]
    combined = np.einsum("gk,kmq->gmq", grid, preds)
    lds = spearman_columns(combined, -np.asarray(losses, dtype=np.float64))  # [G, Q]
    ok = np.isfinite(lds)
    total, count = np.where(ok, lds, 0.0).sum(axis=1, keepdims=True), ok.sum(axis=1, keepdims=True)
    others = (total - np.where(ok, lds, 0.0)) / np.maximum(count - ok, 1)  # [G, Q]: mean over q' != q
    others = np.where(count - ok > 0, others, -np.inf)
    return grid[np.argmax(others, axis=0)]  # first maximum = closest to equal weights


def load_lds_subsets(run_dir: Path | None, corpus_fingerprint: str, n_rows: int,
                     query_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Masks [M, N] and mean losses [M, Q] (Q in `query_ids` order) of the run's LDS subset
    models that measured every one of these queries. Raises a DatablameError naming the fix
    when there are no records, or a query has none."""
    if run_dir is None:
        raise DatablameError("fused combine: learned needs the run directory of an LDS sweep", _FIX)
    jobs = RunLayout(run_dir).lds_jobs_dir
    groups: dict[str, dict[str, list[dict[str, float]]]] = {}
    for path in sorted(jobs.glob("*.json")) if jobs.is_dir() else []:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (rec.get("kind") != "lds-subset" or rec.get("corpus") != corpus_fingerprint
                or rec.get("n_rows") != n_rows or len(rec.get("query_ids", [])) != len(rec.get("loss", []))):
            continue
        setting = json.dumps({k: v for k, v in rec.get("identity", {}).items() if k != "queries"}, sort_keys=True)
        per = dict(zip(rec["query_ids"], (float(x) for x in rec["loss"]), strict=True))
        groups.setdefault(setting, {}).setdefault(rec["kept_mask"], []).append(per)
    if not groups:
        raise DatablameError(f"fused combine: learned found no LDS subset models for this corpus under {jobs}", _FIX)
    wanted = set(query_ids)
    # one training setting: the one whose subsets cover the most of these queries, then the most subsets
    subsets = max(groups.values(), key=lambda g: (sum(wanted <= set().union(*p) for p in g.values()), len(g)))
    covering = {k: v for k, v in subsets.items() if wanted <= set().union(*v)}
    seen = set().union(*(set(p) for v in subsets.values() for p in v))
    missing = [q for q in query_ids if q not in seen]
    if missing:
        raise DatablameError(f"fused combine: learned has no LDS data for queries {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''} (the LDS subset models measured other queries)",
                             _FIX.replace("first", "with these queries"))
    if len(covering) < MIN_SUBSETS:
        raise DatablameError(f"fused combine: learned found {len(covering)} LDS subset models measuring every "
                             f"query (needs {MIN_SUBSETS})", _FIX.replace("first", "with more lds.num_subsets"))
    masks = np.stack([_unpack(k, n_rows) for k in covering])
    losses = np.array([[np.mean([p[q] for p in v if q in p]) for q in query_ids] for v in covering.values()])
    return masks, losses


def _unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)
