"""Run directories: which settings tie a directory to its run."""

import json
import logging

import pytest
from pipeline_config import small_config

from datablame.errors import DatablameError
from datablame.runs import MARKER, full_run_key, prepare_run_dir, run_key


def test_spelling_out_a_default_keeps_the_run_key(tmp_path):
    base = small_config(tmp_path / "r")
    explicit = small_config(tmp_path / "r", data={"hops": {"n_bases": 6}, "num_samples": None},
                            training={"gradient_accumulation_steps": 1})
    assert run_key(explicit) == run_key(base)
    assert run_key(small_config(tmp_path / "r", training={"learning_rate": 1e-3})) != run_key(base)


def test_marker_from_an_older_version_is_migrated_not_refused(tmp_path):
    cfg = small_config(tmp_path / "r")
    out = tmp_path / "r"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"name": "t", "run_key": full_run_key(cfg), "created": "x"}))
    (out / "model" / "final").mkdir(parents=True)
    (out / "model" / "final" / "model.safetensors").write_bytes(b"x")  # a finished stage
    prepare_run_dir(cfg)
    assert json.loads((out / MARKER).read_text())["run_key"] == run_key(cfg)
    with pytest.raises(DatablameError, match="holds another run"):
        prepare_run_dir(small_config(out, training={"learning_rate": 1e-3}))


def test_a_run_that_finished_nothing_takes_the_new_settings(tmp_path, caplog):
    out = tmp_path / "r"
    prepare_run_dir(small_config(out, training={"learning_rate": 1e-3}))  # a start that failed right after
    (out / "model" / "base").mkdir(parents=True)  # a tiny model's base: rebuilt in seconds
    (out / "model" / "base" / "config.json").write_text("{}")
    new = small_config(out)
    caplog.set_level(logging.INFO, logger="datablame")
    prepare_run_dir(new)
    assert json.loads((out / MARKER).read_text())["run_key"] == run_key(new)
    assert not (out / "model" / "base").exists()
    assert "held an unfinished run" in caplog.text and "training.learning_rate 0.001 -> 0.003" in caplog.text


@pytest.mark.parametrize("work", ["attribution/results.json", "model/checkpoint-3/trainer_state.json",
                                  "store/manifest.json"])
def test_a_run_that_holds_work_with_other_settings_is_refused(tmp_path, work):
    out = tmp_path / "r"
    prepare_run_dir(small_config(out, training={"learning_rate": 1e-3}))
    (out / work).parent.mkdir(parents=True)
    (out / work).write_text("{}")
    with pytest.raises(DatablameError, match=r"holds another run.*training\.learning_rate 0\.001 -> 0\.003"):
        prepare_run_dir(small_config(out))
    assert (out / work).is_file()


@pytest.mark.parametrize("overwrite", [False, True])
def test_only_a_changed_length_keeps_the_run_unless_overwrite_asks_for_a_fresh_one(tmp_path, overwrite):
    out = tmp_path / "r"
    prepare_run_dir(small_config(out))
    (out / "model" / "final").mkdir(parents=True)
    (out / "model" / "final" / "model.safetensors").write_bytes(b"x")
    longer = small_config(out, training={"num_train_epochs": 3}, output={"overwrite": overwrite})
    with pytest.raises(DatablameError, match="another length"):  # not training: the model is the old length
        prepare_run_dir(small_config(out, training={"num_train_epochs": 3}))
    prepare_run_dir(longer, data_fingerprint="f" * 64)
    assert json.loads((out / MARKER).read_text())["run_key"] == run_key(longer)
    assert not (out / "model" / "final").exists()
    moved_aside = list(tmp_path.glob("r.old-*"))
    set_aside = list((out / "model" / "superseded").glob("*/final"))
    if overwrite:  # the whole old run renamed, training starts over
        assert len(moved_aside) == 1 and not set_aside
    else:  # the run kept, its finished model set aside, training resumes
        assert not moved_aside and len(set_aside) == 1
