"""Our `trak` against the `traker` library on the same model, rows, queries, loss and modules.

Both sides use exact gradients here (identity projection on our side, traker's
NoOpProjector), so what is compared is the formulation: model output, out-to-loss term,
damped kernel, score. Projected runs differ by the two random projections (traker projects
the full gradient densely, we project per module); their figures are in
benchmarks/results/trak_vs_traker.json (`benchmarks/trak_vs_traker.py`).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from datablame.bench.peers import get_peer
from datablame.bench.peers.traker import run_traker
from datablame.errors import DatablameError
from datablame.methods import get_method

pytest.importorskip("trak")


def _one_module_exact(inputs):
    """One 48x96 module (layer 1 down_proj), unprojected: traker's exact kernel stays small."""
    a = inputs.attribution
    inputs.attribution = a.model_copy(update={
        "modules": a.modules.model_copy(update={"pattern": r"mlp\.down_proj$", "layers": "1"}),
        "projection": a.projection.model_copy(update={"k_in": None, "k_out": None}),
    })
    return inputs


def test_trak_agrees_with_traker_exact(planted_run):
    _, make_inputs, truth = planted_run
    inputs = _one_module_exact(make_inputs())
    run = run_traker(inputs, checkpoints="last", proj_dim=None, damping=0.01)
    assert run.error is None, (run.error, run.info.get("traceback"))
    assert run.seconds > 0 and run.peak_bytes is not None
    ours = get_method("trak", checkpoints="last", damping=0.01).score(inputs)
    assert run.scores.shape == ours.shape
    rho = spearmanr(ours.ravel(), run.scores.ravel())[0]
    assert rho >= 0.99, rho
    for qi in range(len(ours)):  # per query too, not only across queries
        assert spearmanr(ours[qi], run.scores[qi])[0] >= 0.99
    # same sign convention: traker also puts the planted rows on top
    idx = inputs.corpus.index_of()
    for qi, q in enumerate(inputs.queries):
        rel = [idx[r] for r in truth[q.query_id]]
        rest = np.setdiff1d(np.arange(ours.shape[1]), rel)
        assert run.scores[qi, rel].mean() > run.scores[qi, rest].mean()


def test_adapter_options():
    with pytest.raises(DatablameError, match="proj_dim"):
        get_peer("traker", proj_dim=64)
    with pytest.raises(DatablameError, match="output"):
        get_peer("traker", output="loss")
    peer = get_peer("traker")
    assert peer.unavailable() is None and peer.describe()["reference"] == "trak"
