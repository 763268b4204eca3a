"""The table config: chosen by `data.kind`, text configs parse exactly as before, every field checked."""

from __future__ import annotations

import inspect

import pytest

from datablame.config import RunConfig, parse_config
from datablame.config_tabular import TabularRunConfig
from datablame.errors import DatablameError
from datablame.tabular import MODELS


def test_a_text_config_is_still_a_run_config():
    cfg = parse_config({"data": {"source": "planted"}, "model": {"kind": "tiny"}})
    assert isinstance(cfg, RunConfig)


def test_a_table_config_by_dataset_and_its_defaults():
    cfg = parse_config({"data": {"kind": "table", "dataset": "wine"}, "model": {"kind": "lightgbm", "num_leaves": 4}})
    assert isinstance(cfg, TabularRunConfig)
    assert cfg.model.hyperparameters() == {"n_estimators": 50, "learning_rate": 0.1, "num_leaves": 4,
                                           "min_data_in_leaf": 5, "reg_lambda": 0.0}
    assert cfg.attribution.queries == 5 and cfg.verify.checks == ["loo", "removal"]


@pytest.mark.parametrize("data, needle", [
    ({"kind": "table"}, "either data.path"),
    ({"kind": "table", "path": "t.csv", "dataset": "wine"}, "not both"),
    ({"kind": "table", "path": "t.csv"}, "data.target is required"),
    ({"kind": "table", "dataset": "wine", "target": "y"}, "data.target cannot be set"),
    ({"kind": "tabel", "dataset": "wine"}, "'data.kind'"),
    ({"kind": "table", "dataset": "iris"}, "'data.dataset'"),
    ({"kind": "table", "dataset": "wine", "test_size": 1.5}, "'data.test_size'"),
])
def test_bad_data_sections_name_the_field(data, needle):
    with pytest.raises(DatablameError, match="invalid config") as err:
        parse_config({"data": data, "model": {"kind": "xgboost"}})
    assert needle in err.value.problem


def test_the_model_sections_match_the_model_constructors():
    """Every hyperparameter a config section offers is a keyword of that model's constructor."""
    from datablame import config_tabular as ct

    sections = {"mlp": ct.MLPSettings, "linear": ct.LinearSettings, "random_forest": ct.RandomForestSettings,
                "gradient_boosting": ct.GradientBoostingSettings, "xgboost": ct.XGBoostSettings,
                "lightgbm": ct.LightGBMSettings}
    assert set(sections) == set(MODELS)
    for kind, section in sections.items():
        offered = set(section.model_fields) - {"kind", "load", "trust_pickle"}
        params = inspect.signature(MODELS[kind].__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert takes_any or offered <= set(params), (kind, offered - set(params))
