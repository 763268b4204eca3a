"""`datablame plan`: the arithmetic on hand-computed cases, the shapes against real models and
stores, the memory-budget recommendation and its error, and the command on the demo config."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from datablame.cli import app
from datablame.config import ModuleSelection, ProjectionConfig
from datablame.demo import demo_config
from datablame.errors import DatablameError
from datablame.plan.costs import (
    NPY_HEADER,
    Calibration,
    Shape,
    Workload,
    act_bytes_per_token,
    memory,
    parse_bytes,
    seconds,
    store_disk_bytes,
)
from datablame.plan.planner import estimate, recommend
from datablame.plan.shapes import feature_dim, model_shape

MiB = 1 << 20


def _cal(**kw) -> Calibration:
    base = dict(device="cpu", source="test", dtype="float32", base_bytes=500 * MiB, startup_s=5.0, prep_s=1.0,
                train_s_per_token=1e-4, feat_s_per_token=5e-5, fwd_s_per_token=2e-5, decode_s_per_token=1e-3,
                load_fixed_s=0.0, load_bytes_per_s=1e8, save_bytes_per_s=1e8, dot_elems_per_s=1e9, flops_per_s=1e11)
    return Calibration(**{**base, **kw})


# one module 128 -> 344 projected to 32 x 32 (no bias), 1,000,000 parameters
SHAPE = Shape(params=1_000_000, matmul_params=900_000, layers=4, hidden=128, intermediate=344, vocab=1024, heads=4,
              modules=[(128, 344, 32, 32)] * 12)


def test_store_bytes_by_hand():
    w = Workload(rows=1000, shard_rows=400, store_bytes=2, faiss="flat", id_bytes=8)
    d = 12 * 32 * 32  # 12288 floats per row
    got = store_disk_bytes(SHAPE, w)
    assert got["shards"] == 1000 * d * 2 + 3 * NPY_HEADER  # 3 shards of at most 400 rows
    assert got["norms"] == 1000 * 4 + 3 * NPY_HEADER
    assert got["row_losses"] == 1000 * 4 + 3 * NPY_HEADER
    assert got["row_ids"] == 1000 * 12
    assert got["faiss"] == 1000 * d * 4 + 45
    assert got["total"] == sum(v for k, v in got.items() if k != "total")
    ivf = store_disk_bytes(SHAPE, Workload(rows=1_000_000, faiss="ivf"))["faiss"]
    assert ivf == 1_000_000 * (d * 4 + 8) + 4000 * d * 4  # nlist = 4*sqrt(1e6) = 4000


def test_store_bytes_match_a_written_store(tmp_path):
    from datablame.store import build_store

    rows, dim, shard = 300, 48, 128
    data = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    info = build_store(tmp_path / "s", n_rows=rows, row_ids=[str(i) for i in range(rows)],
                       identity={"model_fingerprint": "t", "data_fingerprint": "t"},
                       featurize=lambda a, b: data[a:b], dim=dim, shard_size=shard, progress=False)
    shape = Shape(1, 1, 1, 1, 1, 1, 1, [(8, 8, 8, 6)])  # 48 floats per row
    w = Workload(rows=rows, shard_rows=shard, faiss="none")
    got = store_disk_bytes(shape, w)
    assert got["shards"] + got["norms"] == info.nbytes


def test_training_memory_by_hand():
    w = Workload(rows=100, train_steps=10, train_batch=8, train_max_tokens=64, feat_batch=8)
    mem = memory(SHAPE, w, _cal(), "float32")["train"]
    assert mem["weights"] == mem["grads"] == 4_000_000
    assert mem["adamw"] == 8_000_000
    per_token = 4 * ((10 * 128 + 4 * 344) * 4 + 2 * 4 * 64 * 4) + 4 * 1024 * 4
    assert act_bytes_per_token(SHAPE, 64, 4) == per_token
    assert mem["activations"] == 8 * 64 * per_token
    assert mem["total"] == 500 * MiB + 16_000_000 + 8 * 64 * per_token
    bf16 = memory(SHAPE, w, _cal(), "bfloat16")["featurize"]["weights"]
    assert bf16 == 2_000_000
    ckpt = memory(SHAPE, Workload(**{**vars(w), "checkpointing": True}), _cal(), "float32")["train"]["activations"]
    layer = (per_token - 4 * 1024 * 4) / 4
    assert ckpt == 8 * 64 * (4 * 128 * 4 + layer + 4 * 1024 * 4) and ckpt < mem["activations"]


def test_seconds_by_hand():
    w = Workload(rows=100, train_steps=10, train_tokens_per_step=256, feat_tokens=6400, queries=2, query_tokens=64,
                 completion_tokens=10, faiss="none")
    sec = seconds(SHAPE, w, _cal(), "float32")
    assert sec["train"]["steps"] == pytest.approx(10 * 256 * 1e-4)
    assert sec["featurize"]["featurize"] == pytest.approx(6400 * 5e-5)
    assert sec["scores"]["scoring"] == pytest.approx(2 * 100 * 12288 / 1e9)
    assert sec["scores"]["behaviour"] == pytest.approx(64 * 2e-5 + 10 * 1e-3)
    assert sec["featurize"]["load"] == pytest.approx(4_000_000 / 1e8)
    assert sec["train"]["total"] == pytest.approx(sum(v for k, v in sec["train"].items() if k != "total"))


def test_parse_bytes():
    assert parse_bytes("16GB") == 16 << 30
    assert parse_bytes("512MiB") == 512 << 20
    assert parse_bytes("1.5g") == int(1.5 * (1 << 30))
    with pytest.raises(DatablameError, match="--memory-budget"):
        parse_bytes("lots")


def test_meta_shape_matches_the_real_model():
    from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
    from datablame.models.tiny import build_tiny_llama, train_tokenizer

    cfg = demo_config("unused")
    tok = train_tokenizer(["a small corpus of words", "another row of text"] * 20, 300)
    proj = ProjectionConfig(k_in=8, k_out=16)
    ms = model_shape(cfg.model, cfg.attribution.modules, vocab_size=len(tok))
    model = build_tiny_llama(cfg.model.tiny, tok, 0)
    assert ms.params == sum(p.numel() for p in model.parameters())
    real = GradientFeaturizer(model, select_modules(model, cfg.attribution.modules), FactoredProjection(proj))
    assert feature_dim(ms.modules, proj) == real.dim
    wide = ProjectionConfig(k_in=None, k_out=None)  # identity: the whole weight gradient
    assert feature_dim(ms.modules, wide) == sum(m.d_in * m.d_out for m in ms.modules)
    attn = model_shape(cfg.model, ModuleSelection(preset="attention"), vocab_size=len(tok))
    assert {m.name.rsplit(".", 1)[-1] for m in attn.modules} >= {"q_proj", "o_proj"}


def _shape_and_workload():
    cfg = demo_config("unused")
    ms = model_shape(cfg.model, cfg.attribution.modules, vocab_size=1024)
    w = Workload(rows=544, queries=8, train_steps=102, train_batch=16, train_tokens_per_step=450, train_max_tokens=32,
                 feat_batch=16, feat_tokens=15000, query_tokens=224, completion_tokens=96, tiny=True)
    return cfg, ms, w


def test_budget_recommendation_and_its_error():
    cfg, ms, w = _shape_and_workload()
    proj = cfg.attribution.projection
    ok = recommend(ms, proj, w, _cal(), "float32", 2 << 30, 28)
    assert ok["fits"] and ok["changes"] == ["none"] and ok["peak_bytes"] <= 2 << 30
    # a large store: the flat FAISS index (rows x dim x 4 bytes in RAM) dominates the featurize stage
    big = Workload(**{**vars(w), "rows": 200_000, "feat_tokens": 200_000 * 28, "faiss": "ivf"})
    unconstrained = recommend(ms, proj, big, _cal(), "float32", 1 << 50, 28)
    tight = recommend(ms, proj, big, _cal(), "float32", int(unconstrained["peak_bytes"] * 0.5), 28)
    assert tight["changes"] != ["none"] and tight["peak_bytes"] <= unconstrained["peak_bytes"] * 0.5
    with pytest.raises(DatablameError) as err:
        recommend(ms, proj, w, _cal(), "float32", 100 * MiB, 28)
    msg = err.value.problem
    assert "memory budget 100.00 MiB fits no setting" in msg and "still needs" in msg and "projection 8x8" in msg
    assert "--memory-budget" in err.value.fix


def test_checkpointing_is_tried_before_smaller_batches_when_activations_dominate():
    """Long sequences: activations dominate train and featurize. Checkpointing keeps each layer's
    input only, so it cuts both peaks and costs time; a budget between the two peaks is met by
    turning it on at the configured batch sizes, not by halving them."""
    cfg, ms, w = _shape_and_workload()
    w = replace(w, train_max_tokens=1024, train_tokens_per_step=16 * 1024, feat_tokens=544 * 1024)
    proj = cfg.attribution.projection
    off, on = (estimate(ms, proj, replace(w, checkpointing=ck), _cal(), "float32", 28)["stages"] for ck in (False, True))
    for stage in ("train", "featurize"):
        assert on[stage]["peak_bytes"] < 0.6 * off[stage]["peak_bytes"]
        assert on[stage]["seconds"] > off[stage]["seconds"]
    budget = int(max(st["peak_bytes"] for st in on.values()) * 1.1)
    assert budget < max(st["peak_bytes"] for st in off.values())
    rec = recommend(ms, proj, w, _cal(), "float32", budget, 28)
    assert rec["changes"] == ["model.gradient_checkpointing true"] and rec["gradient_checkpointing"]
    assert (rec["train_batch"], rec["featurize_batch"]) == (w.train_batch, w.feat_batch)


def test_api_plan_without_calibration(tmp_path):
    from datablame.api_plan import format_plan, plan

    cfg = demo_config(str(tmp_path / "run"))
    out = plan(cfg, calibrate=False, memory_budget="8GB")
    assert set(out["stages"]) == {"train", "featurize", "scores"}
    assert out["dim"] == 12 * 32 * 32 and out["workload"]["rows"] > 100
    assert out["workload"]["train_steps"] == 15 * -(-out["workload"]["rows"] // 16)
    assert out["recommendation"]["fits"]
    text = format_plan(out)
    assert "featurize" in text and "store on disk" in text and "budget 8.00 GiB" in text
    with pytest.raises(DatablameError, match="fits no setting"):
        plan(cfg, calibrate=False, memory_budget="1MB")


def test_cli_plan_on_the_demo_config(tmp_path):
    path = Path(tmp_path / "run.yaml")
    path.write_text(demo_config(str(tmp_path / "run")).to_yaml())
    res = CliRunner().invoke(app, ["plan", "--config", str(path), "--json", "--memory-budget", "4GB"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["calibration"]["source"] == "measured" and out["calibration"]["feat_s_per_token"] > 0
    assert all(st["seconds"] > 0 and st["peak_bytes"] > 0 for st in out["stages"].values())
    bad = CliRunner().invoke(app, ["plan", "--config", str(path), "--memory-budget", "lots"])
    assert bad.exit_code == 2 and "--memory-budget" in bad.output
