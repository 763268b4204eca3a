from pathlib import Path

import pytest

from datablame.config import load_config, parse_config
from datablame.errors import DatablameError

MIN = {"data": {"source": "planted"}, "model": {"kind": "tiny"}}


def test_minimal_config_fills_seed000_defaults():
    cfg = parse_config(MIN)
    assert cfg.training.learning_rate == 2e-5
    assert cfg.training.lr_scheduler_type == "cosine_with_restarts"
    assert cfg.training.per_device_train_batch_size == 8
    assert cfg.training.report_to == []


def test_unknown_key_is_named():
    with pytest.raises(DatablameError, match="unknown key 'training.learnig_rate'"):
        parse_config({**MIN, "training": {"learnig_rate": 1e-3}})


def test_bad_value_and_missing_path_are_named():
    with pytest.raises(DatablameError, match="lr_scheduler_type"):
        parse_config({**MIN, "training": {"lr_scheduler_type": "zigzag"}})
    with pytest.raises(DatablameError, match="data.path is required"):
        parse_config({"data": {"source": "file"}, "model": {"kind": "tiny"}})
    with pytest.raises(DatablameError, match="missing key 'model'"):
        parse_config({"data": {"source": "planted"}})


def test_yaml_round_trip(tmp_path: Path):
    cfg = parse_config(MIN)
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


def test_missing_and_broken_files(tmp_path: Path):
    with pytest.raises(DatablameError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(DatablameError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("name", ["run.yaml", "tinyllama-patent-qa.yaml"])
def test_shipped_examples_validate(name):
    from importlib import resources

    text = resources.files("datablame.templates").joinpath(name).read_text()
    import yaml

    cfg = parse_config(yaml.safe_load(text))
    assert cfg.model.max_length == 512
    if name.startswith("tinyllama"):  # seed 000: the evaluation half and the tracker are configured too
        assert cfg.evaluate.resolved_types() == (["generation", "bertscore", "similarity", "mmlu"], True)
        assert {"professional_law", "international_law"} <= set(cfg.evaluate.mmlu.subjects)
        assert cfg.tracking.backend == "mlflow"
