"""The fair check of the cross-checkpoint methods: rows actually trained on between the two
checkpoints against the rows that were not.

old = the run's final model, new = that model trained further on one fact's planted rows
only. Those rows caused the whole change, so for that fact's query every method must score
them above the other rows on average (a flipped sign fails this).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cross_checkpoint_fixtures import train_on_subset

from datablame.methods import get_method


@pytest.fixture(scope="module")
def subset_pair(planted_run, tmp_path_factory):
    cfg, make_inputs, truth = planted_run
    inputs = make_inputs()
    trained = truth[inputs.queries[0].query_id]
    new_dir = train_on_subset(cfg, inputs, trained, tmp_path_factory.mktemp("subset") / "sub")
    return {"old": str(Path(cfg.output.dir) / "model" / "final"), "new": str(new_dir)}, trained


@pytest.mark.parametrize("name, options", [
    ("delta_h", {}), ("delta_h_grad", {}), ("delta_h_grad", {"ig_steps": 4}),
    ("causal_patching", {}), ("causal_patching", {"direction": "new_to_old"}),
])
def test_trained_rows_score_above_untrained_rows(planted_run, subset_pair, name, options):
    _, make_inputs, _ = planted_run
    pair, trained = subset_pair
    inputs = make_inputs()
    m = get_method(name, **pair, **options)
    scores = m.score(inputs)
    assert m.info["old"] == pair["old"] and m.info["new"] == pair["new"]
    idx = inputs.corpus.index_of()
    rel = [idx[r] for r in trained]
    rest = np.setdiff1d(np.arange(len(inputs.corpus)), rel)
    assert scores[0, rel].mean() > scores[0, rest].mean()
