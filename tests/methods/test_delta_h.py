"""delta_h: hidden-state change between checkpoints (sign, fair check, refusals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cross_checkpoint_fixtures import save_mismatched
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.methods import get_method


def test_planted_rows_score_higher(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("delta_h")
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and np.all(np.abs(scores) <= 1 + 1e-9)
    assert m.info["old"].endswith("base") and m.info["new"] == "attributed model"
    assert np.mean(planted_gaps(scores, inputs, truth)) > 0  # would fail with the sign flipped
    np.testing.assert_array_equal(scores, get_method("delta_h").score(make_inputs()))  # deterministic


def test_mismatched_or_identical_checkpoints_are_refused(planted_run, tmp_path):
    cfg, make_inputs, _ = planted_run
    inputs = make_inputs()
    wide = save_mismatched(cfg, inputs, tmp_path / "wide", other_tokenizer=False)
    with pytest.raises(DatablameError, match="different architectures"):
        get_method("delta_h", old=str(wide)).score(inputs)
    other = save_mismatched(cfg, inputs, tmp_path / "tok", other_tokenizer=True)
    with pytest.raises(DatablameError, match="different tokenizers"):
        get_method("delta_h", old=str(other)).score(inputs)
    with pytest.raises(DatablameError, match="same weights"):
        get_method("delta_h", old=str(Path(cfg.output.dir) / "model" / "final")).score(inputs)
    with pytest.raises(DatablameError, match="does not exist"):
        get_method("delta_h", old=str(tmp_path / "nope")).score(inputs)


def test_old_defaults_to_first_checkpoint_without_a_base(planted_run):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    inputs.base_model = None
    m = get_method("delta_h", layers=0)
    m.score(inputs)
    assert m.info["old"] == str(inputs.checkpoints[0])
    inputs.checkpoints = []
    with pytest.raises(DatablameError, match="no model before training"):
        get_method("delta_h").score(inputs)
