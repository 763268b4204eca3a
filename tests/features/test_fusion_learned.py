"""Learned fusion: simplex weights fitted on LDS subset models, leaving each query out."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from datablame.errors import DatablameError
from datablame.features.fusion_learned import (
    fit_loo_weights,
    load_lds_subsets,
    simplex_grid,
    spearman_columns,
    zscore_rows,
)
from datablame.layout import RunLayout


def _subsets(m: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((m, n), dtype=bool)
    for j in range(m):
        masks[j, rng.choice(n, n // 2, replace=False)] = True
    return masks


def _losses(masks: np.ndarray, effects: np.ndarray, noise: float, seed: int = 1) -> np.ndarray:
    """Subset losses [M, Q]: including row n lowers query q's loss by effects[q, n]."""
    rng = np.random.default_rng(seed)
    return -(masks.astype(float) @ effects.T) + noise * rng.normal(size=(len(masks), len(effects)))


def test_simplex_grid_and_zscores():
    g = simplex_grid(3)
    assert g.shape == (66, 3) and np.all(g >= 0) and np.allclose(g.sum(axis=1), 1)
    assert np.allclose(g[0], [0.4, 0.3, 0.3]) or np.allclose(sorted(g[0]), [0.3, 0.3, 0.4])  # nearest to even
    z = zscore_rows(np.array([[1.0, 2.0, 3.0, -np.inf], [5.0, 5.0, 5.0, 5.0]]))
    assert np.allclose(z[0, :3].mean(), 0) and z[0, 3] == z[0, :3].min() and np.all(z[1] == 0)


def test_spearman_columns_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    a[:3, 0] = 1.0  # ties
    want = [spearmanr(a[:, q], b[:, q]).statistic for q in range(4)]
    np.testing.assert_allclose(spearman_columns(a, b), want)
    assert np.isnan(spearman_columns(np.ones((5, 1)), b[:5, :1])[0])


def test_weights_favour_the_component_that_predicts_the_subset_losses():
    rng = np.random.default_rng(0)
    n, q, m = 60, 6, 40
    effects = rng.normal(size=(q, n))
    a = effects + 0.3 * rng.normal(size=(q, n))  # predicts what retraining does
    b = rng.normal(size=(q, n))  # noise
    masks = _subsets(m, n)
    w = fit_loo_weights([zscore_rows(a), zscore_rows(b)], masks, _losses(masks, effects, 0.5))
    assert w.shape == (q, 2) and np.all(w >= 0) and np.allclose(w.sum(axis=1), 1)
    assert np.all(w[:, 0] >= 0.8), w
    # the other way round: the weights follow the evidence, not the component's position
    w2 = fit_loo_weights([zscore_rows(b), zscore_rows(a)], masks, _losses(masks, effects, 0.5))
    assert np.all(w2[:, 1] >= 0.8), w2


def test_a_querys_own_lds_target_never_enters_its_weights():
    rng = np.random.default_rng(1)
    n, m = 50, 40
    a, b = rng.normal(size=(3, n)), rng.normal(size=(3, n))
    masks = _subsets(m, n, seed=2)
    z = [zscore_rows(a), zscore_rows(b)]
    follows_a = _losses(masks, a, 0.1)
    pulled = follows_a.copy()
    pulled[:, 0] = _losses(masks, b, 0.1)[:, 0]  # query 0's own target now favours B
    w_a, w_pulled = fit_loo_weights(z, masks, follows_a), fit_loo_weights(z, masks, pulled)
    # query 0's weights are fitted on queries 1 and 2 only: unchanged, still on A
    np.testing.assert_array_equal(w_pulled[0], w_a[0])
    assert w_pulled[0, 0] >= 0.8
    # ... while the others, which do see query 0's target, move towards B (so the fit uses the targets)
    assert w_pulled[1, 1] > w_a[1, 1] and w_pulled[2, 1] > w_a[2, 1]
    # and in-sample weights for query 0 would have moved: its own target favours B
    own = spearman_columns(np.einsum("k,kmq->mq", [0.0, 1.0], np.stack([masks @ zk.T for zk in z])), -pulled)
    assert own[0] > 0.9


def _write_record(run_dir, name, mask, query_ids, loss, corpus="fp", n_rows=None, **extra):
    jobs = RunLayout(run_dir).lds_jobs_dir
    jobs.mkdir(parents=True, exist_ok=True)
    rec = {"kind": "lds-subset", "corpus": corpus, "n_rows": n_rows or len(mask), "query_ids": list(query_ids),
           "kept_mask": base64.b64encode(np.packbits(mask).tobytes()).decode(), "loss": list(loss),
           "identity": {"queries": "h", "epochs": None}, **extra}
    (jobs / f"{name}.json").write_text(json.dumps(rec))


def test_loader_matches_queries_by_id_and_averages_seeds(tmp_path):
    masks = _subsets(4, 10)
    for j, mk in enumerate(masks):
        # recorded in another order, with an extra query; two seeds of subset 0
        _write_record(tmp_path, f"s{j}", mk, ["q2", "x", "q1"], [j + 0.2, 99.0, j + 0.1])
    _write_record(tmp_path, "s0b", masks[0], ["q1", "q2"], [0.3, 0.4])
    _write_record(tmp_path, "other", masks[1], ["q1", "q2"], [7.0, 7.0], corpus="another corpus")
    got_masks, losses = load_lds_subsets(tmp_path, "fp", 10, ["q1", "q2"])
    assert got_masks.shape == (4, 10) and losses.shape == (4, 2)
    row0 = int(np.flatnonzero((got_masks == masks[0]).all(axis=1))[0])
    np.testing.assert_allclose(losses[row0], [(0.1 + 0.3) / 2, (0.2 + 0.4) / 2])
    row3 = int(np.flatnonzero((got_masks == masks[3]).all(axis=1))[0])
    np.testing.assert_allclose(losses[row3], [3.1, 3.2])


def test_missing_lds_records_or_queries_name_the_fix(tmp_path):
    with pytest.raises(DatablameError) as err:
        load_lds_subsets(tmp_path, "fp", 10, ["q1"])
    assert "datablame lds --config" in str(err.value.fix) and "no LDS subset models" in err.value.problem
    with pytest.raises(DatablameError, match="run directory"):
        load_lds_subsets(None, "fp", 10, ["q1"])
    for j, mk in enumerate(_subsets(4, 10)):
        _write_record(tmp_path, f"s{j}", mk, ["q1"], [float(j)])
    with pytest.raises(DatablameError) as err:
        load_lds_subsets(tmp_path, "fp", 10, ["q1", "q9"])
    assert "q9" in err.value.problem and "datablame lds --config" in err.value.fix
