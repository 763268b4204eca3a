"""Nothing in a run directory runs code: malicious pickles planted where Trainer writes its
torch files are never unpickled (attribute with tracin / trak / less, and a `train` resume),
and the learning-rate schedule is rebuilt from the run's config, not from training_args.bin.
"""

from __future__ import annotations

import logging
import pathlib
import shutil

import numpy as np
import pytest
import torch
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame.cli import app

runner = CliRunner()

TRAINING = {"num_train_epochs": 2, "lr_scheduler_type": "cosine", "warmup_ratio": 0.25, "logging_steps": 1,
            "save_steps": 3}
PLANTABLE = ("training_args.bin", "rng_state.pth", "scheduler.pt", "optimizer.pt")


class _Payload:
    """Unpickling this creates `sentinel` (what an attacker's os.system would do)."""

    def __init__(self, sentinel: pathlib.Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def _plant(path: pathlib.Path, sentinel: pathlib.Path) -> None:
    torch.save(_Payload(sentinel), path)  # the zip format Trainer writes, with a hostile pickle inside


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small planted run trained with warmup + cosine (checkpoints at 3, 6 and the end)."""
    from datablame import api

    cfg = small_config(tmp_path_factory.mktemp("untrusted") / "run", training=TRAINING)
    api.train(cfg)
    return cfg


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run and its config file (tests plant files in it)."""
    from datablame.config import parse_config

    out = tmp_path / "run"
    shutil.copytree(trained.output.dir, out)
    raw = trained.model_dump(mode="json")
    raw["output"]["dir"] = str(out)
    cfg = parse_config(raw)
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    return cfg, path, out


def _checkpoints(out: pathlib.Path) -> list[pathlib.Path]:
    from datablame.train import list_checkpoints

    found = list_checkpoints(out / "model")
    assert len(found) >= 2, found
    return found


def _cli(*args: str):
    res = runner.invoke(app, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


def test_the_payload_is_live(tmp_path):
    """Unpickled the unsafe way, the planted file does create its sentinel (so the tests below mean something)."""
    sentinel = tmp_path / "pwned"
    _plant(tmp_path / "x.pt", sentinel)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert sentinel.exists()


@pytest.mark.parametrize("methods", ["tracin", "trak,less"])
def test_attribute_never_unpickles_training_args_rng_or_scheduler(run_copy, tmp_path, caplog, methods):
    cfg, path, out = run_copy
    sentinel = tmp_path / "pwned"
    for ck in _checkpoints(out):
        for name in ("training_args.bin", "rng_state.pth", "scheduler.pt"):
            _plant(ck / name, sentinel)
    with caplog.at_level(logging.WARNING, logger="datablame"):
        res = _cli("attribute", "--config", str(path), "--method", methods)
    assert not sentinel.exists(), "a planted pickle ran"
    assert res.exit_code == 0, res.output
    assert (out / "attribution" / "results.json").is_file()
    assert "scheduler.pt" in caplog.text  # the hostile file is named when it is dropped as an lr source


def test_less_refuses_a_hostile_optimizer_state_by_name(run_copy, tmp_path):
    _, path, out = run_copy
    sentinel = tmp_path / "pwned"
    for ck in _checkpoints(out):
        _plant(ck / "optimizer.pt", sentinel)
    res = _cli("attribute", "--config", str(path), "--method", "less")
    assert not sentinel.exists(), "a planted pickle ran"
    assert res.exit_code == 2, res.output
    assert "optimizer.pt" in res.stderr and "fix:" in res.stderr
    # tracin needs no optimizer state: the same run still attributes
    res = _cli("attribute", "--config", str(path), "--method", "tracin")
    assert res.exit_code == 0 and not sentinel.exists(), res.output


def test_train_resume_skips_checkpoints_it_cannot_load_safely(run_copy, tmp_path, caplog):
    """Resume never hands Trainer a checkpoint whose torch files need unpickling, nor one
    without trainer_state.json: it falls back to an earlier one, with a warning naming why."""
    _, path, out = run_copy
    sentinel = tmp_path / "pwned"
    cks = _checkpoints(out)
    shutil.rmtree(out / "model" / "final")
    for name in PLANTABLE:
        _plant(cks[-1] / name, sentinel)
    (cks[-2] / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING, logger="datablame"):
        res = _cli("train", "--config", str(path))
    assert not sentinel.exists(), "a planted pickle ran"
    assert res.exit_code == 0, res.output
    assert (out / "model" / "final").is_dir()
    assert "rng_state.pth" in caplog.text or "optimizer.pt" in caplog.text or "scheduler.pt" in caplog.text
    assert "trainer_state.json" in caplog.text


def test_resumable_checkpoint_choice(tmp_path):
    from datablame.train.finetune import resumable_checkpoint

    for step in (3, 6, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
        torch.save({"x": torch.zeros(2)}, tmp_path / f"checkpoint-{step}" / "scheduler.pt")
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6" / "scheduler.pt").write_bytes(b"\x80truncated")
    assert resumable_checkpoint(tmp_path) == tmp_path / "checkpoint-3"  # 9: no state, 6: unreadable
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{not json")
    assert resumable_checkpoint(tmp_path) is None
    assert resumable_checkpoint(tmp_path / "missing") is None


def test_schedule_rebuilt_from_config_matches_trainer(trained):
    """The per-step rates rebuilt from the training config equal what Trainer logged (warmup
    + cosine), and the warmup equals TrainingArguments.get_warmup_steps' (the old source)."""
    from transformers import TrainingArguments

    from datablame import api
    from datablame.features.checkpoints import (
        _trainer_state,
        checkpoint_schedule,
        rebuilt_schedule,
        warmup_steps,
    )

    inputs = api.prepare_inputs(trained)[0]
    last = _checkpoints(pathlib.Path(trained.output.dir))[-1]
    state = _trainer_state(last)
    total = int(state["max_steps"])
    args = TrainingArguments(output_dir=str(last), learning_rate=trained.training.learning_rate,
                             lr_scheduler_type="cosine", warmup_steps=float(trained.training.warmup_ratio),
                             report_to=[], use_cpu=True)
    assert warmup_steps(trained.training, total) == args.get_warmup_steps(total) >= 1
    per_step = rebuilt_schedule(trained.training, total)
    logged = [(int(e["step"]), float(e["learning_rate"])) for e in state["log_history"] if "learning_rate" in e]
    assert len(logged) >= total - 1  # logging_steps=1
    for s, lr in logged:  # transformers 5 logs at step s the rate step s used ("before update")
        assert per_step[s - 1] == pytest.approx(lr, rel=1e-6, abs=1e-12), s
    assert max(per_step) == pytest.approx(trained.training.learning_rate) and per_step[0] < per_step[2]
    infos = checkpoint_schedule(inputs)
    assert {i.lr_source for i in infos} == {"schedule"}
    prev = 0
    for info in infos:
        assert info.lr == pytest.approx(np.mean(per_step[prev:info.step]), rel=1e-9)
        prev = info.step
