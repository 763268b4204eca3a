"""Run directories: which settings tie a directory to its run."""

import json

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
    (out / "model").mkdir()
    prepare_run_dir(cfg)
    assert json.loads((out / MARKER).read_text())["run_key"] == run_key(cfg)
    with pytest.raises(DatablameError, match="holds another run"):
        prepare_run_dir(small_config(out, training={"learning_rate": 1e-3}))
