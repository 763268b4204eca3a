"""A failed start (missing data path, wrong column, a training that stopped before its first
checkpoint) leaves a run directory that the corrected config reuses, with a log line; a
directory that holds a finished stage or checkpoints with other settings is still refused."""

from __future__ import annotations

import json
import logging

import pytest
from file_run import raw_config, write_rows

from datablame import api
from datablame.config import parse_config
from datablame.errors import DatablameError
from datablame.layout import RunLayout


def _cfg(out, rows, **over):
    """file_run's config; each keyword is merged into that section (`data=` included)."""
    raw = raw_config(out, rows)
    for k, v in over.items():
        raw[k] = {**raw[k], **v}
    return parse_config(raw)


def _marker(out) -> dict:
    return json.loads(RunLayout(out).marker.read_text())


def test_missing_data_path_then_fixed_path_trains_in_the_same_dir(tmp_path, caplog):
    out, data = tmp_path / "run", write_rows(tmp_path / "rows.jsonl")
    bad = _cfg(out, tmp_path / "no-such-rows.jsonl")
    with pytest.raises(DatablameError, match="does not exist"):
        api.attribute(bad)
    assert _marker(out)["run_key"]  # the failed start left its marker behind
    caplog.set_level(logging.INFO, logger="datablame")
    good = _cfg(out, data)
    api.train(good)
    assert RunLayout(out).final_model.is_dir()
    assert "held an unfinished run" in caplog.text and "data.path" in caplog.text
    result, _ = api.attribute(good)
    assert result.queries


def test_wrong_column_then_fixed_column_runs_in_the_same_dir(tmp_path):
    out, data = tmp_path / "run", write_rows(tmp_path / "rows.jsonl")
    with pytest.raises(DatablameError, match="prompt"):
        api.attribute(_cfg(out, data, data={"input_column": "prompt"}))
    old_key = _marker(out)["run_key"]
    outcome = api.run(_cfg(out, data))
    assert outcome.result.queries and _marker(out)["run_key"] != old_key


def test_training_that_failed_before_a_checkpoint_leaves_a_reusable_dir(tmp_path, caplog):
    """max_length too short: training stops after the tiny base and the training record were
    written; those leftovers are replaced (the base is rebuilt), not refused."""
    out, data = tmp_path / "run", write_rows(tmp_path / "rows.jsonl")
    with pytest.raises(DatablameError, match="max_length"):
        api.train(_cfg(out, data, model={"max_length": 8}))
    lay = RunLayout(out)
    assert lay.base_model.is_dir() and lay.train_record.is_file() and not lay.checkpoints()
    first_base = lay.base_model.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="datablame")
    api.train(_cfg(out, data))
    assert lay.final_model.is_dir() and lay.checkpoints()
    assert lay.base_model.stat().st_mtime_ns != first_base  # rebuilt for the new settings
    assert "model.max_length 8 -> 64" in caplog.text


def test_data_fixed_in_place_after_a_failed_start_is_not_refused(tmp_path):
    """Same config, data file corrected after a start that finished nothing: the old
    leftovers' data fingerprint no longer blocks training."""
    out, data = tmp_path / "run", write_rows(tmp_path / "rows.jsonl")
    cfg = _cfg(out, data, model={"max_length": 8})
    with pytest.raises(DatablameError, match="max_length"):
        api.train(cfg)
    before = json.loads(RunLayout(out).train_record.read_text())["data_fingerprint"]
    write_rows(data, edit={0: " A much shorter answer."})
    with pytest.raises(DatablameError, match="max_length"):  # still too short, but not "changed since"
        api.train(cfg)
    assert json.loads(RunLayout(out).train_record.read_text())["data_fingerprint"] != before


def test_finished_run_with_other_settings_is_still_refused_and_says_what_differs(tmp_path):
    out, data = tmp_path / "run", write_rows(tmp_path / "rows.jsonl")
    api.train(_cfg(out, data))
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(DatablameError, match=r"holds another run.*training\.learning_rate 0\.003 -> 0\.001"):
        api.train(_cfg(out, data, training={"learning_rate": 1e-3}))
    assert sorted(p.name for p in out.rglob("*")) == before


def test_interrupted_training_with_other_settings_is_still_refused(tmp_path):
    """Checkpoints are work: an interrupted training with another learning rate is not replaced."""
    import shutil

    out, data = tmp_path / "run", write_rows(tmp_path / "rows.jsonl")
    api.train(_cfg(out, data))
    lay = RunLayout(out)
    shutil.rmtree(lay.final_model)
    assert lay.checkpoints()
    with pytest.raises(DatablameError, match="holds another run"):
        api.train(_cfg(out, data, training={"learning_rate": 1e-3}))
    assert lay.checkpoints() and not lay.final_model.exists()
