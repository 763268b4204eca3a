"""Datamodels: recovery of known linear weights, the sign convention, and reading the LDS
sweep's records (no training: the records are written here in the sweep's format)."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.data.corpus import Corpus, Query, Row
from datablame.errors import DatablameError
from datablame.methods import AttributionContext, get_method
from datablame.methods.datamodels import fit_datamodel, queries_hash
from datablame.utils.io import atomic_write_json
from datablame.verify.lds import subset_masks
from datablame.verify.retrain import RetrainContext, pack_mask


def _linear_case(m=400, n=25, q=2, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    masks = subset_masks(n, 0.5, m, seed)
    w = rng.normal(size=(q, n)) * (rng.random((q, n)) < 0.4)  # sparse true effects (nats)
    losses = 3.0 - masks @ w.T + noise * rng.normal(size=(m, q))  # including row r lowers loss by w_r
    return masks, losses, w


@pytest.mark.parametrize("regression", ["ridge", "lasso"])
def test_recovers_known_weights(regression):
    masks, losses, w = _linear_case()
    est = fit_datamodel(masks, losses, regression=regression)
    assert est.shape == w.shape
    for q in range(w.shape[0]):
        assert np.corrcoef(est[q], w[q])[0, 1] > 0.99
    # every subset has the same size, so weights are identified up to a common constant:
    # compare centred weights (lasso picks the sparse solution, which is the true one here)
    centred = lambda a: a - a.mean(axis=1, keepdims=True)  # noqa: E731
    assert np.max(np.abs(centred(est) - centred(w))) < 0.1
    if regression == "lasso":
        assert np.max(np.abs(est - w)) < 0.1


def test_sign_row_that_lowers_the_loss_scores_positive():
    masks = subset_masks(12, 0.5, 200, seed=1)
    helpful, harmful = 3, 7
    losses = (2.0 - 0.8 * masks[:, helpful] + 0.5 * masks[:, harmful])[:, None]
    est = fit_datamodel(masks, losses)[0]
    assert np.argmax(est) == helpful and est[helpful] > 0.5
    assert np.argmin(est) == harmful and est[harmful] < -0.3
    flipped = fit_datamodel(masks, -losses)[0]  # the opposite behaviour flips every sign
    assert np.argmax(flipped) == harmful and np.argmin(flipped) == helpful


def _inputs(run_dir, n_rows=12, n_queries=2):
    rows = [Row(f"r{i}", f"Q{i}?", f" A{i}.") for i in range(n_rows)]
    queries = [Query(f"P{j}?", f" C{j}.", f"q{j}") for j in range(n_queries)]
    return AttributionContext(
        model=None, tokenizer=None, corpus=Corpus(rows), rows=None, queries=queries, query_rows=None,
        attribution=None, model_cfg=None, run_dir=run_dir,
    )


def _write_sweep(run_dir, inputs, masks, losses, seeds=(0,)):
    qh = queries_hash([(q.query_id, q.prompt, q.completion) for q in inputs.queries])
    keys = []
    for j, mask in enumerate(masks):
        for s in seeds:
            key = f"job{j}-s{s}"
            atomic_write_json(run_dir / "lds" / "jobs" / f"{key}.json", {
                "key": key, "kind": "lds-subset", "n_rows": len(mask), "kept_mask": pack_mask(mask),
                "corpus": inputs.corpus.fingerprint(), "identity": {"queries": qh, "epochs": None},
                "seed": s, "loss": list(losses[j] + 0.001 * s),
            })
            keys.append(key)
    return keys


def test_query_hash_matches_the_sweep():
    queries = (("q0", "P0?", " C0."), ("q1", "Pé?", " C1."))
    ctx = RetrainContext(config={}, run_dir=".", base_model=None, corpus_fingerprint="x", n_rows=1, queries=queries)
    assert queries_hash(queries) == ctx.queries_hash()


def test_method_reads_the_lds_sweep(tmp_path):
    inputs = _inputs(tmp_path)
    masks = subset_masks(12, 0.5, 120, seed=2)
    w = np.zeros((2, 12))
    w[0, 4], w[1, 9] = 1.0, 0.7
    losses = 2.0 - masks @ w.T
    keys = _write_sweep(tmp_path, inputs, masks, losses, seeds=(0, 1))
    method = get_method("datamodels")
    method.fit(inputs)
    scores = method.score(inputs)
    assert scores.shape == (2, 12) and scores.dtype == np.float64
    assert np.argmax(scores[0]) == 4 and np.argmax(scores[1]) == 9
    # two seeds of a subset (and repeated draws of the same subset) are averaged
    assert method.subsets == len({m.tobytes() for m in masks})
    assert method.describe()["subsets"] == method.subsets
    # holding subsets out leaves fewer to fit on (every model of a held-out subset goes)
    held = get_method("datamodels", holdout=keys[:20])
    held.score(inputs)
    left = {m.tobytes() for m in masks[10:]} - {m.tobytes() for m in masks[:10]}
    assert held.subsets == len(left)
    only_seed0 = get_method("datamodels", holdout=keys[:20:2])  # one seed's key is enough
    only_seed0.score(inputs)
    assert only_seed0.subsets == len(left)


def test_missing_sweep_names_datablame_lds(tmp_path):
    inputs = _inputs(tmp_path)
    with pytest.raises(DatablameError, match="datablame lds"):
        get_method("datamodels").score(inputs)
    # records for other queries do not count, and the error says so
    other = _inputs(tmp_path, n_queries=3)
    _write_sweep(tmp_path, other, subset_masks(12, 0.5, 5, 0), np.zeros((5, 3)))
    with pytest.raises(DatablameError, match="other queries"):
        get_method("datamodels").score(inputs)
    with pytest.raises(DatablameError, match="regression"):
        get_method("datamodels", regression="svm")
