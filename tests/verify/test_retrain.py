"""One retraining job: same init + same seed reproduces the attributed model; the row
modifications (removal, label flip, controls) are what they claim to be."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.data.corpus import Corpus, Row
from datablame.errors import DatablameError
from datablame.verify.removal import control_rows, flip_pairs
from datablame.verify.retrain import RetrainJob, _modified_corpus, execute, pack_mask, unpack_mask


def test_baseline_with_the_training_seed_reproduces_the_attributed_model(verify_run):
    from datablame import api
    from datablame.verify.common import retrain_context
    from datablame.verify.retrain import measure_queries

    cfg, _ = verify_run
    inputs = api.prepare_inputs(cfg)[0]
    ctx = retrain_context(cfg, inputs.run_dir, inputs.corpus, inputs.queries, generate=True, max_new_tokens=24)
    original = measure_queries(inputs.model, inputs.tokenizer, ctx.queries, generate=True, max_new_tokens=24)
    rec = execute(ctx, RetrainJob(cfg.training.seed))
    assert rec["rows_trained"] == len(inputs.corpus) and rec["n_removed"] == 0
    np.testing.assert_allclose(rec["loss"], original["loss"], rtol=1e-5, atol=1e-6)
    assert rec["generation"] == original["generation"]
    assert rec["logprob"] == pytest.approx([-x * n for x, n in zip(rec["loss"], rec["tokens"], strict=True)])
    # removing rows changes the training set (and so, here, the model)
    without = execute(ctx, RetrainJob(cfg.training.seed, removed=(0, 1)))
    assert without["rows_trained"] == len(inputs.corpus) - 2
    assert unpack_mask(without["kept_mask"], len(inputs.corpus)).tolist() == [False, False] + [True] * (len(inputs.corpus) - 2)
    assert without["loss"] != rec["loss"]


def test_flipped_rows_take_another_rows_completion():
    rows = [Row(f"r{i}", f"Q{i}?", f" A{i}.", {"i": i}) for i in range(6)]
    corpus = Corpus(rows)
    pairs = flip_pairs([1, 4], 6, "shuffle", control_seed=0)
    assert [r for r, _ in pairs] == [1, 4]
    assert all(d not in (1, 4) for _, d in pairs) and len({d for _, d in pairs}) == 2
    assert pairs == flip_pairs([4, 1], 6, "shuffle", control_seed=0)  # deterministic, order-free
    flipped = _modified_corpus(corpus, RetrainJob(0, flipped=pairs), "X")
    for r, d in pairs:
        assert flipped[r].prompt == rows[r].prompt and flipped[r].completion == rows[d].completion
        assert flipped[r].row_id == rows[r].row_id
    assert [flipped[i] for i in (0, 2, 3, 5)] == [rows[i] for i in (0, 2, 3, 5)]
    const = _modified_corpus(corpus, RetrainJob(0, flipped=flip_pairs([2], 6, "constant", 0)), "CORRUPTED")
    assert const[2].completion == "CORRUPTED"
    assert _modified_corpus(corpus, RetrainJob(0), "X") is corpus


def test_controls_are_random_k_rows_per_seed_and_draw():
    a = control_rows(100, 10, seed=0, draw=0, control_seed=0)
    assert len(set(a)) == 10 and all(0 <= i < 100 for i in a)
    assert a == control_rows(100, 10, seed=0, draw=0, control_seed=0)
    assert a != control_rows(100, 10, seed=1, draw=0, control_seed=0)
    assert a != control_rows(100, 10, seed=0, draw=1, control_seed=0)
    with pytest.raises(DatablameError, match="larger than the corpus"):
        control_rows(5, 10, 0, 0, 0)


def test_mask_packing_round_trips():
    m = np.random.default_rng(0).random(37) < 0.5
    assert unpack_mask(pack_mask(m), 37).tolist() == m.tolist()
