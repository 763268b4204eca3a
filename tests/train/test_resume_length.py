"""A config that only shortens or extends training resumes from the last checkpoint within
the new length (and says so) instead of being refused; with a constant lr schedule the result
is the model a fresh training of that length gives. Training logs its steps and an ETA."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from pipeline_config import small_config

from datablame import api
from datablame.config import TrainingConfig
from datablame.errors import DatablameError
from datablame.layout import RunLayout, checkpoint_step
from datablame.train.finetune import _resume_note, planned_steps


def _weights(loaded) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_interrupted_training_resumes_within_a_shorter_length(tmp_path, caplog):
    out = tmp_path / "run"
    api.train(small_config(out))  # 2 epochs: 8 steps, checkpoints 3, 6, 8
    lay = RunLayout(out)
    shutil.rmtree(lay.final_model)  # as if training had stopped between step 6 and the end
    shutil.rmtree(lay.checkpoint(8))
    caplog.set_level(logging.INFO, logger="datablame")
    short = small_config(out, training={"num_train_epochs": 1})  # 4 steps
    got = _weights(api.train(short))
    assert "only the training length changed (training.num_train_epochs 2.0 -> 1.0)" in caplog.text
    assert "resuming training from checkpoint-3 (step 3), the last intact checkpoint within the new total of 4" \
        in caplog.text
    assert [checkpoint_step(p) for p in lay.checkpoints()] == [3, 4]  # checkpoint-6 is past the new end
    assert any(lay.model.superseded_dir.glob("*/checkpoint-6"))  # set aside, not deleted
    fresh = _weights(api.train(small_config(tmp_path / "fresh", training={"num_train_epochs": 1})))
    _assert_same(got, fresh)  # constant lr: the same model as 4 steps from the start
    longer = _weights(api.train(small_config(tmp_path / "longer")))
    assert any(not torch.equal(longer[k], fresh[k]) for k in fresh)  # the comparison above could fail


def test_extending_a_finished_run_resumes_from_its_last_checkpoint(tmp_path, caplog):
    out = tmp_path / "run"
    api.train(small_config(out, training={"num_train_epochs": 1}))  # 4 steps, checkpoints 3, 4
    lay = RunLayout(out)
    assert [checkpoint_step(p) for p in lay.checkpoints()] == [3, 4]
    with pytest.raises(DatablameError, match="another length"):  # attributing needs the model retrained first
        api.attribute(small_config(out))
    caplog.set_level(logging.INFO, logger="datablame")
    got = _weights(api.train(small_config(out)))  # 2 epochs
    assert "resuming training from checkpoint-4 (step 4)" in caplog.text and "instead of starting over" in caplog.text
    assert any(lay.model.superseded_dir.glob("*/final"))  # the 1-epoch model is kept aside
    assert checkpoint_step(lay.checkpoints()[-1]) == 8
    _assert_same(got, _weights(api.train(small_config(tmp_path / "fresh"))))
    result, _ = api.attribute(small_config(out))
    assert result.queries


def test_shortening_a_finished_run_to_a_checkpoint_step_trains_no_further(tmp_path, caplog):
    """Resuming at exactly the new total: Trainer would take one more step (6 ends mid-epoch)."""
    out = tmp_path / "run"
    api.train(small_config(out))  # checkpoints 3, 6, 8
    caplog.set_level(logging.INFO, logger="datablame")
    got = _weights(api.train(small_config(out, training={"max_steps": 6})))
    assert "checkpoint-6 is at the total of 6 steps" in caplog.text
    assert [checkpoint_step(p) for p in RunLayout(out).checkpoints()] == [3, 6]
    _assert_same(got, _weights(api.train(small_config(tmp_path / "fresh", training={"max_steps": 6}))))


def test_a_changed_length_with_a_total_dependent_schedule_says_the_model_differs(tmp_path):
    ck = tmp_path / "checkpoint-6"
    ck.mkdir()
    (ck / "trainer_state.json").write_text(json.dumps({"max_steps": 8, "global_step": 6}))
    cosine = TrainingConfig(lr_scheduler_type="cosine")
    assert "depends on the total: steps 1-6 followed it for 8 steps" in _resume_note(ck, 6, cosine)
    assert "does not depend on the total" in _resume_note(ck, 6, TrainingConfig(lr_scheduler_type="constant"))
    assert "the last intact checkpoint" in _resume_note(ck, 8, cosine)  # same length: a plain resume


def test_training_logs_its_steps_and_an_eta(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="datablame")
    cfg = small_config(tmp_path / "run")
    api.train(cfg)
    steps = checkpoint_step(RunLayout(cfg.output.dir).checkpoints()[-1])  # Trainer saves the last step
    assert planned_steps(cfg.training, len(api.load_corpus(cfg)[0])) == steps
    assert f"training: {steps} optimizer steps in all ({steps} to go)" in caplog.text
    eta = [r.getMessage() for r in caplog.records if "s/step measured over" in r.getMessage()]
    assert len(eta) == 1 and f"for the {steps} steps of this training" in eta[0]
