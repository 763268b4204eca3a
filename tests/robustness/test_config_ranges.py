"""Every numeric setting is range-checked when the config is read, naming the field; and a
key repeated in the YAML is an error naming the key and its lines (not last-one-wins)."""

from __future__ import annotations

import copy

import pytest
import yaml
from file_run import cli
from hypothesis import given, settings
from hypothesis import strategies as st

from datablame.config import load_config, load_yaml, parse_config
from datablame.errors import DatablameError

MIN = {"data": {"source": "planted"}, "model": {"kind": "tiny"}}


def with_value(path: str, value, base: dict | None = None) -> dict:
    raw = copy.deepcopy(base or MIN)
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return raw


# (field, a value it must refuse); the message must name the field
BAD = [
    ("seed", -1), ("seed", 2**32),
    ("data.num_samples", 0), ("data.num_samples", -3),
    ("data.planted.n_entities", 0), ("data.planted.n_facts", -1), ("data.planted.plants_per_fact", 0),
    ("data.planted.decoys_per_fact", -1), ("data.planted.background_per_entity", -1),
    ("data.planted.poison_facts", -1), ("data.planted.poison_rows", 0), ("data.planted.poison_true_rows", 0),
    ("data.hops.n_bases", 0), ("data.hops.depth", -1), ("data.hops.docs_per_kind", 0),
    ("data.hops.query_inputs", 0), ("data.hops.max_value", 0), ("data.hops.filler_rows", -1),
    ("model.max_length", -5), ("model.max_length", 0),
    ("model.tiny.hidden_size", 0), ("model.tiny.intermediate_size", 0), ("model.tiny.num_hidden_layers", 0),
    ("model.tiny.num_attention_heads", 0), ("model.tiny.num_key_value_heads", 0), ("model.tiny.vocab_size", 0),
    ("model.tiny.max_position_embeddings", 0), ("model.tiny.hidden_size", -128),
    ("training.num_train_epochs", 0), ("training.num_train_epochs", -1), ("training.max_steps", 0),
    ("training.max_steps", -2), ("training.per_device_train_batch_size", 0),
    ("training.per_device_train_batch_size", -8), ("training.gradient_accumulation_steps", 0),
    ("training.learning_rate", 0), ("training.learning_rate", -1e-3), ("training.weight_decay", -0.01),
    ("training.warmup_ratio", 1.0), ("training.max_grad_norm", -1.0), ("training.save_steps", 0),
    ("training.save_total_limit", 0), ("training.logging_steps", 0), ("training.dataloader_num_workers", -1),
    ("training.seed", -1), ("training.lora.r", 0), ("training.lora.alpha", 0), ("training.lora.dropout", 1.0),
    ("training.lora.dropout", -0.1),
    ("attribution.top_k", 0), ("attribution.top_k", -3), ("attribution.batch_size", 0),
    ("attribution.batch_size", -2), ("attribution.max_new_tokens", 0), ("attribution.max_new_tokens", -1),
    ("attribution.projection.k_in", 0), ("attribution.projection.k_out", 0), ("attribution.store.shard_rows", 0),
    ("attribution.retrieval.embedding_k", 0), ("attribution.retrieval.bm25_k", 0),
    ("attribution.retrieval.final_k", 0), ("attribution.retrieval.rerank_batch_size", 0),
    ("verify.k", [0]), ("verify.k", []), ("verify.seeds", []), ("verify.seeds", [0, -1]), ("verify.controls", 0),
    ("verify.control_seed", -1), ("verify.loo_max_rows", 0), ("verify.epochs", 0), ("verify.max_new_tokens", 0),
    ("verify.confidence", 1.0), ("verify.similarity_threshold", 2.0), ("verify.flip_text", ""),
    ("verify.ray.num_cpus", 0), ("verify.ray.threads_per_job", 0),
    ("lds.alpha", 0.0), ("lds.alpha", 1.0), ("lds.num_subsets", 1), ("lds.seed", -1), ("lds.seeds", [-1]),
    ("lds.epochs", -1), ("lds.bootstrap", 10), ("lds.confidence", 0.0), ("lds.ray.num_cpus", 0),
    ("training.num_train_epochs", "two"), ("attribution.top_k", 2.5),
]


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_bad_value_is_refused_naming_the_field(field, value):
    with pytest.raises(DatablameError) as err:
        parse_config(with_value(field, value))
    assert field in err.value.problem, err.value.problem


@pytest.mark.parametrize("over,field", [
    ({"hidden_size": 30, "num_attention_heads": 4}, "model.tiny.hidden_size"),  # not divisible
    ({"hidden_size": 20, "num_attention_heads": 4}, "model.tiny.hidden_size"),  # odd head size (rotary)
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "model.tiny.num_key_value_heads"),
])
def test_tiny_model_shapes_must_fit(over, field):
    with pytest.raises(DatablameError, match=field.replace(".", r"\.")):
        parse_config(with_value("model.tiny", over))


@pytest.mark.parametrize("query,field", [
    ({"prompt": ""}, "attribution.queries.0.prompt"),
    ({"prompt": "   "}, "attribution.queries.0.prompt"),
    ({"prompt": "Q?", "completion": ""}, "attribution.queries.0.completion"),
    ({"prompt": 5}, "attribution.queries.0.prompt"),
    ({"prompt": "Q?", "query_id": 3}, "attribution.queries.0.query_id"),
])
def test_bad_config_query_is_refused(query, field):
    with pytest.raises(DatablameError, match=field.replace(".", r"\.")):
        parse_config(with_value("attribution.queries", [query]))


GOOD = [
    ("training.max_steps", -1), ("training.max_steps", 1), ("training.max_grad_norm", None),
    ("training.max_grad_norm", 0.0), ("training.save_total_limit", None), ("training.save_total_limit", 1),
    ("training.weight_decay", 0.0), ("training.dataloader_num_workers", 0), ("training.lora.dropout", 0.0),
    ("data.num_samples", None), ("data.num_samples", 1), ("data.planted.decoys_per_fact", 0),
    ("attribution.retrieval.embedding_k", None), ("attribution.retrieval.bm25_k", None),
    ("attribution.projection.k_in", None), ("model.max_length", 1), ("seed", 0), ("seed", 2**32 - 1),
    ("model.tiny", {"hidden_size": 24, "num_attention_heads": 4, "num_key_value_heads": 2}),
]


@pytest.mark.parametrize("field,value", GOOD, ids=[f"{f}={v!r}" for f, v in GOOD])
def test_edge_values_are_accepted(field, value):
    parse_config(with_value(field, value))


def test_epochs_zero_is_fine_when_max_steps_sets_the_length():
    cfg = parse_config(with_value("training", {"num_train_epochs": 0, "max_steps": 5}))
    assert cfg.training.max_steps == 5


# integer fields and their least valid value (property: accepted exactly when >= that value)
INT_FLOORS = [
    ("model.max_length", 1), ("model.tiny.vocab_size", 1), ("model.tiny.intermediate_size", 1),
    ("model.tiny.num_hidden_layers", 1), ("model.tiny.max_position_embeddings", 1),
    ("training.per_device_train_batch_size", 1), ("training.gradient_accumulation_steps", 1),
    ("training.save_steps", 1), ("training.logging_steps", 1), ("training.save_total_limit", 1),
    ("training.dataloader_num_workers", 0), ("training.lora.r", 1), ("attribution.top_k", 1),
    ("attribution.batch_size", 1), ("attribution.max_new_tokens", 1), ("attribution.store.shard_rows", 1),
    ("attribution.retrieval.bm25_k", 1), ("data.num_samples", 1), ("data.planted.background_per_entity", 0),
    ("verify.controls", 1), ("lds.num_subsets", 2),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(INT_FLOORS), st.integers(-(10**6), 10**6))
def test_generated_integer_settings(field_floor, value):
    field, floor = field_floor
    raw = with_value(field, value)
    if value >= floor:
        parse_config(raw)
    else:
        with pytest.raises(DatablameError, match=field.replace(".", r"\.")):
            parse_config(raw)


@settings(max_examples=60, deadline=None)
@given(st.integers(-(10**4), 10**4), st.floats(-10, 10, allow_nan=False))
def test_generated_steps_and_epochs(max_steps, epochs):
    raw = with_value("training", {"max_steps": max_steps, "num_train_epochs": epochs})
    ok = (max_steps == -1 and epochs > 0) or (max_steps >= 1 and epochs >= 0)
    if ok:
        parse_config(raw)
    else:
        with pytest.raises(DatablameError, match=r"training\.(max_steps|num_train_epochs)"):
            parse_config(raw)


@settings(max_examples=60, deadline=None)
@given(st.floats(-1, 1, allow_nan=False))
def test_generated_learning_rate(lr):
    raw = with_value("training.learning_rate", lr)
    if lr > 0:
        parse_config(raw)
    else:
        with pytest.raises(DatablameError, match=r"training\.learning_rate"):
            parse_config(raw)


def test_bad_values_in_a_yaml_file_are_named_by_load_config(tmp_path):
    for field, value in [("training.num_train_epochs", -1), ("attribution.batch_size", -4), ("model.max_length", -5)]:
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(with_value(field, value)))
        with pytest.raises(DatablameError, match=field.replace(".", r"\.")):
            load_config(p)


@pytest.mark.parametrize("field,value", [("attribution.top_k", 0), ("training.per_device_train_batch_size", 0),
                                         ("model.tiny.num_hidden_layers", 0)])
def test_cli_refuses_bad_value_with_exit_2_and_keeps_results(tmp_path, field, value):
    out = tmp_path / "run"
    results = out / "attribution" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_bytes(b'{"previous": "good results"}\n')
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(with_value(field, value, {**MIN, "output": {"dir": str(out)}})))
    res = cli("attribute", "--config", str(cfg))
    assert res.exit_code == 2
    assert field in res.stderr and "Traceback" not in res.stderr
    assert results.read_bytes() == b'{"previous": "good results"}\n'


# -- duplicate YAML keys ------------------------------------------------------------------------

DUPLICATES = [
    ("seed: 1\nseed: 2\ndata: {source: planted}\nmodel: {kind: tiny}\n", "seed", 1, 2),
    ("data: {source: planted}\nmodel: {kind: tiny}\ntraining:\n  learning_rate: 0.1\n  save_steps: 3\n"
     "  learning_rate: 0.001\n", "learning_rate", 4, 6),
    ("data: {source: planted}\nmodel: {kind: tiny}\nmodel: {kind: hf, name_or_path: x}\n", "model", 2, 3),
    ("data: {source: planted, source: file}\nmodel: {kind: tiny}\n", "source", 1, 1),
]


@pytest.mark.parametrize("text,key,first,again", DUPLICATES)
def test_duplicate_yaml_key_is_an_error(tmp_path, text, key, first, again):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(DatablameError) as err:
        load_config(p)
    assert f"duplicate key {key!r}" in err.value.problem
    assert f"line {again}" in err.value.problem and f"line {first}" in err.value.problem
    assert str(p) in err.value.problem


def test_duplicate_key_through_the_cli(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("data: {source: planted}\nmodel: {kind: tiny}\nattribution:\n  top_k: 5\n  top_k: 50\n")
    res = cli("attribute", "--config", str(p))
    assert res.exit_code == 2
    assert "duplicate key 'top_k'" in res.stderr and "line 5" in res.stderr


def test_merge_keys_and_same_key_in_different_mappings_are_fine():
    text = "base: &b {lr: 1, steps: 2}\nrun:\n  <<: *b\n  lr: 3\nother: {lr: 4}\n"
    assert load_yaml(text) == {"base": {"lr": 1, "steps": 2}, "run": {"lr": 3, "steps": 2}, "other": {"lr": 4}}
