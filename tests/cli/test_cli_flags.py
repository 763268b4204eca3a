"""`--version`, `attribute --option METHOD.KEY=VALUE` (the parser `bench` shares) and
`inspect`'s capped, existing-names-only layer suggestions (issue 15 item 8)."""

from __future__ import annotations

import json

import pytest
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame import __version__, api
from datablame.cli import app, parse_options
from datablame.curvature.inspect import resolve_module
from datablame.errors import DatablameError
from datablame.layout import RunLayout

runner = CliRunner()


def test_version_prints_the_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"datablame {__version__}"


def test_bench_and_attribute_share_one_option_parser():
    import datablame.cli_bench as cli_bench

    assert cli_bench.parse_options is parse_options  # one parser, not a copy
    assert parse_options(["ekfac.damping=0.001", "ekfac.x=[1, 2]", "bm25.k1=2"]) == {
        "ekfac": {"damping": 0.001, "x": [1, 2]}, "bm25": {"k1": 2}}
    for bad in ("damping=1", "ekfac.damping", ".k=1", "ekfac.x=[1,"):
        with pytest.raises(DatablameError, match="--option"):
            parse_options([bad])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flags")
    cfg = small_config(
        tmp / "run", name="tiny-flags",
        data={"planted": {"n_entities": 3, "n_facts": 2, "plants_per_fact": 3, "decoys_per_fact": 1,
                          "background_per_entity": 2}},
        model={"max_length": 128, "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                           "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 512}},
        training={"num_train_epochs": 2, "per_device_train_batch_size": 4, "save_steps": 1000, "logging_steps": 1000},
    )
    api.train(cfg)
    path = tmp / "run.yaml"
    path.write_text(cfg.to_yaml())
    return cfg, path


def _random_ranking(cfg) -> list[str]:
    data = json.loads(RunLayout(cfg.output.dir).results_json.read_text())
    return [r["row_id"] for r in data["queries"][0]["rankings"]["random"]]


def test_attribute_option_reaches_the_method(tiny_run):
    cfg, path = tiny_run
    base = ["attribute", "--config", str(path), "--method", "random"]
    res = runner.invoke(app, [*base, "--option", "random.seed=0"])
    assert res.exit_code == 0, res.output
    seed0 = _random_ranking(cfg)
    res = runner.invoke(app, [*base, "--option", "random.seed=7"])
    assert res.exit_code == 0, res.output
    assert _random_ranking(cfg) != seed0, "--option random.seed must change the random ranking"
    res = runner.invoke(app, [*base, "--option", "random.seed=0"])
    assert _random_ranking(cfg) == seed0
    res = runner.invoke(app, [*base, "--option", "random.sead=1"])
    assert res.exit_code == 2 and "--option" in res.output and "sead" in res.output


def test_inspect_unknown_layer_lists_a_few_existing_names(tiny_run):
    cfg, path = tiny_run
    res = runner.invoke(app, ["inspect", "--config", str(path), "--layer", "layers.0.mlp.down_prj"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "model.layers.0.mlp.down_proj" in text and "--layer model.layers.0.mlp.down_proj" in text


def test_resolve_module_caps_the_list_and_suggests_only_existing_names():
    names = [f"transformer.h.{i}.{m}" for i in range(40) for m in ("mlp.c_fc", "mlp.c_proj", "attn.c_attn")]
    with pytest.raises(DatablameError) as err:
        resolve_module(names, "layers.3.mlp.down_proj")  # a Llama name in a GPT-2 model
    problem, fix = err.value.problem, err.value.fix
    assert "of 120" in problem and problem.count("transformer.h.") == 5  # a few, not all 120
    suggested = fix.split("--layer ")[1]
    assert suggested in names
    with pytest.raises(DatablameError) as err:
        resolve_module(names, "h.3.mlp.c_prj")
    assert err.value.fix.endswith("--layer transformer.h.3.mlp.c_proj")
    with pytest.raises(DatablameError, match="matches several modules") as err:
        resolve_module(names, "mlp.c_proj")
    assert "40 of the 120" in err.value.problem and "and 35 more" in err.value.problem
    assert err.value.fix.split("--layer ")[1] in names
