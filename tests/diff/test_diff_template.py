"""The shipped OLMo-2 diff example (seed 004's real setting) validates: the config, every
method's options, the classifier settings, and `datablame init --example olmo2-diff`."""

from __future__ import annotations

from importlib import resources

import yaml
from typer.testing import CliRunner

from datablame.cli import app
from datablame.config import parse_config
from datablame.diff.classify import ClassifierSettings
from datablame.methods.base import check_options_table
from datablame.templates import EXAMPLES


def test_olmo2_diff_example_validates(tmp_path):
    assert EXAMPLES["olmo2-diff"] == "olmo2-diff.yaml"
    text = resources.files("datablame.templates").joinpath("olmo2-diff.yaml").read_text()
    cfg = parse_config(yaml.safe_load(text))
    d = cfg.diff
    assert d.before == "allenai/OLMo-2-0425-1B-SFT" and d.after == "allenai/OLMo-2-0425-1B-Instruct"
    assert cfg.model.name_or_path == d.after  # the attributed model is the after-model
    assert d.alphas == [0, 0.5, 1, 2, 4] and d.n_samples == 50 and d.pool_size == 100
    assert (d.patch.top_k, d.patch.seeds, d.patch.steps, d.patch.r) == (20, 3, 200, 8)
    assert d.patch.top_k <= d.pool_size
    assert set(cfg.attribution.methods) == {"grad_cosine", "activation_similarity", "llm_judge"}
    check_options_table(cfg.attribution.options)
    ClassifierSettings.model_validate(d.classifier.model_dump())
    res = CliRunner().invoke(app, ["init", str(tmp_path / "d.yaml"), "--example", "olmo2-diff"])
    assert res.exit_code == 0, res.output
    assert parse_config(yaml.safe_load((tmp_path / "d.yaml").read_text())).diff.patch.seeds == 3
