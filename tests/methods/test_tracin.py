"""TracIn over checkpoints: sign, exactness against grad_dot, learning rates per checkpoint."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from planted_gap import planted_gaps

from datablame.config import TrainingConfig
from datablame.errors import DatablameError
from datablame.features.checkpoints import (
    checkpoint_features,
    checkpoint_schedule,
    load_checkpoint_model,
    select_checkpoints,
)
from datablame.features.context import SharedFeatures
from datablame.features.gradients import featurizer_for, gradient_features
from datablame.grads import GradientFeaturizer, select_modules
from datablame.methods import get_method


def test_planted_rows_score_higher(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("tracin", checkpoints=3)  # the last three (each checkpoint is a featurization)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    gaps = planted_gaps(scores, inputs, truth)
    assert np.mean(gaps) > 0 and min(gaps) > 0, gaps


def test_one_checkpoint_is_lr_times_grad_dot(planted_run):
    """The last checkpoint is the final model: TracIn there is η · grad_dot exactly."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    last = select_checkpoints(inputs, "last")[0]
    assert last.lr == pytest.approx(3e-3)  # constant schedule of the fixture run
    tracin = get_method("tracin", checkpoints="last").score(inputs)
    dot = get_method("grad_dot").score(inputs)
    np.testing.assert_allclose(tracin, last.lr * dot, rtol=1e-12, atol=0)


def test_early_checkpoint_features_match_direct_featurization(planted_run):
    """Features at checkpoint-3 equal a featurizer built by hand on that checkpoint."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    first = checkpoint_schedule(inputs)[0]
    model = load_checkpoint_model(inputs, first.path)
    feat = GradientFeaturizer(model, select_modules(model, inputs.attribution.modules), featurizer_for(inputs).projection)
    rows, _ = feat.featurize(inputs.rows, 5, inputs.tokenizer.pad_token_id or 0, desc=False)
    queries, _ = feat.featurize(inputs.query_rows, 5, inputs.tokenizer.pad_token_id or 0, desc=False)
    g = checkpoint_features(inputs, first)
    torch.testing.assert_close(g.rows, rows, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(g.rows, gradient_features(inputs).rows)  # really another model
    expected = first.lr * (queries.double() @ rows.double().T).numpy()
    np.testing.assert_allclose(get_method("tracin", checkpoints=[first.step]).score(inputs), expected, rtol=1e-4)


def test_deterministic_and_cached_on_disk(planted_run):
    _, make_inputs, _ = planted_run
    a = get_method("tracin", checkpoints=2).score(make_inputs())
    inputs = make_inputs()
    cached = sorted((inputs.work_dir / "checkpoint_features").glob("checkpoint-*.npz"))
    assert cached, "row features of earlier checkpoints are kept on disk"
    b = get_method("tracin", checkpoints=2).score(inputs)
    np.testing.assert_array_equal(a, b)


def test_bad_options_and_no_checkpoints(planted_run):
    _, make_inputs, _ = planted_run
    with pytest.raises(DatablameError, match="weighting"):
        get_method("tracin", weighting="sgd")
    inputs = make_inputs()
    with pytest.raises(DatablameError, match="no checkpoint at steps"):
        get_method("tracin", checkpoints=[999]).score(inputs)
    inputs.checkpoints = []
    inputs.shared = SharedFeatures()
    with pytest.raises(DatablameError, match="no saved checkpoints"):
        get_method("tracin").score(inputs)


def _fake_checkpoints(tmp_path, steps, total, *, history: list[dict] | None = None):
    """Checkpoint dirs with what Trainer writes about the schedule (cosine with warmup 0.2 x 10)."""
    from transformers import get_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=total)
    per_step, paths = [], []
    for s in range(1, total + 1):
        per_step.append(sched.get_last_lr()[0])  # rate of step s
        opt.step()
        sched.step()
        if s in steps:
            d = tmp_path / f"checkpoint-{s}"
            d.mkdir()
            torch.save(sched.state_dict(), d / "scheduler.pt")
            state = {"global_step": s, "max_steps": total, "log_history": history or []}
            (d / "trainer_state.json").write_text(json.dumps(state))
            paths.append(d)
    return paths, per_step


class _Inputs:
    def __init__(self, checkpoints, training=None):
        self.checkpoints, self.shared, self.training = checkpoints, SharedFeatures(), training


_COSINE = TrainingConfig(learning_rate=1e-3, lr_scheduler_type="cosine", warmup_ratio=0.2)


def test_lr_from_rebuilt_schedule(tmp_path):
    """Rebuilt from the run's training config (no training_args.bin is ever read)."""
    paths, per_step = _fake_checkpoints(tmp_path, {4, 7, 10}, 10)
    infos = checkpoint_schedule(_Inputs(paths[::-1], _COSINE))  # any order in, step order out
    assert [i.step for i in infos] == [4, 7, 10] and {i.lr_source for i in infos} == {"schedule"}
    expected = [np.mean(per_step[0:4]), np.mean(per_step[4:7]), np.mean(per_step[7:10])]
    np.testing.assert_allclose([i.lr for i in infos], expected, rtol=1e-9)
    assert [i.steps for i in infos] == [4, 3, 3]


def test_lr_fallbacks(tmp_path, caplog):
    history = [{"step": 2, "learning_rate": 5e-4}, {"step": 6, "learning_rate": 2e-4}]
    (tmp_path / "a").mkdir()
    paths, _ = _fake_checkpoints(tmp_path / "a", {4, 8}, 8, history=history)
    infos = checkpoint_schedule(_Inputs(paths))
    assert [i.lr_source for i in infos] == ["log_history"] * 2
    # transformers 5 logs at step s the rate step s used; step 1 (before any entry) takes the first
    assert infos[0].lr == pytest.approx(5e-4)  # steps 1-4 <- 5e-4
    assert infos[1].lr == pytest.approx((5e-4 + 2e-4 + 2e-4 + 2e-4) / 4)  # step 5 <- step 2; 6,7,8 <- step 6
    (tmp_path / "b").mkdir()
    paths, per_step = _fake_checkpoints(tmp_path / "b", {3}, 6)
    infos = checkpoint_schedule(_Inputs(paths))
    assert infos[0].lr_source == "optimizer" and infos[0].lr == pytest.approx(per_step[3])  # the next step's rate
    (paths[0] / "scheduler.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="datablame"):
        infos = checkpoint_schedule(_Inputs(paths))
    assert infos[0].lr_source == "uniform" and infos[0].lr == 1.0 and "no learning rate" in caplog.text


def test_rebuilt_schedule_checked_against_saved_rates(tmp_path, caplog):
    """A training config changed after training (another peak lr) is not trusted."""
    paths, _ = _fake_checkpoints(tmp_path, {4, 10}, 10)
    other = TrainingConfig(learning_rate=2e-3, lr_scheduler_type="cosine", warmup_ratio=0.2)
    with caplog.at_level(logging.WARNING, logger="datablame"):
        infos = checkpoint_schedule(_Inputs(paths, other))
    assert {i.lr_source for i in infos} == {"optimizer"} and "disagrees" in caplog.text
