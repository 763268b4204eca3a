"""Large-model knobs (issue 21, item 4): bf16 featurizing, gradient checkpointing, device_map
pass-through, and 8-/4-bit loading's clear messages where the backend cannot run."""

from __future__ import annotations

import sys

import pytest
import torch

from datablame.config import (
    ModelConfig,
    ProjectionConfig,
    TrainingConfig,
    parse_config,
)
from datablame.demo import demo_config
from datablame.errors import DatablameError
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.models import load_model
from datablame.models.loading import placement_kwargs, save_model
from datablame.models.tokenize import encode_pairs


@pytest.fixture
def tiny(tiny_training_setting):
    return tiny_training_setting


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_bf16_featurizing_scores_close_to_fp32(tiny):
    """bfloat16 autocast (weights stay float32, projections in float32): grad_cosine scores within
    0.02 (absolute, on a [-1, 1] scale) of float32 ones, every row's feature at cosine >= 0.99."""
    corpus, cfg = tiny
    loaded = load_model(cfg, tokenizer_texts=[r.text for r in corpus], seed=0)
    rows = list(corpus)[:16]  # bfloat16 matmuls are emulated (slow) on CPUs without AVX512-BF16
    enc = encode_pairs(loaded.tokenizer, [r.prompt for r in rows], [r.completion for r in rows], max_length=64)
    mods = select_modules(loaded.model, demo_config("unused").attribution.modules)
    proj = FactoredProjection(ProjectionConfig(k_in=16, k_out=16))

    def feats(autocast):
        return GradientFeaturizer(loaded.model, mods, proj, autocast=autocast).featurize(
            enc, 8, loaded.tokenizer.pad_token_id, desc=False)[0]

    f32, bf = feats(None), feats(torch.bfloat16)
    assert not torch.equal(f32, bf)  # autocast did run in bfloat16
    assert (_unit(f32) * _unit(bf)).sum(1).min() >= 0.99
    s32, sbf = _unit(f32[:4]) @ _unit(f32).T, _unit(bf[:4]) @ _unit(bf).T
    assert (s32 - sbf).abs().max() <= 0.02


def test_featurize_dtype_changes_the_store_identity(tiny, tmp_path):
    from datablame.inputs import prepare_inputs

    raw = demo_config(str(tmp_path / "run")).model_dump(mode="json")
    raw["training"]["enabled"] = False
    raw["model"] = {"kind": "hf", "name_or_path": str(tmp_path / "m")}
    tiny_cfg = tiny[1]
    texts = [f"row {i} text" for i in range(30)]
    loaded = load_model(tiny_cfg, tokenizer_texts=texts, seed=0)
    save_model(loaded.model, loaded.tokenizer, tmp_path / "m")
    plain = parse_config(raw)
    raw["attribution"]["featurize_dtype"] = "bfloat16"
    bf = parse_config(raw)
    ids = [prepare_inputs(c, queries=False, use_store=False)[0].identity().store() for c in (plain, bf)]
    assert ids[0] != ids[1]


def test_gradient_checkpointing_trains_the_same_model(tiny, tmp_path):
    from datablame.train import finetune

    corpus, cfg = tiny
    tc = TrainingConfig(max_steps=3, per_device_train_batch_size=4, learning_rate=5e-3, save_steps=100,
                        logging_steps=100, seed=1)
    out = {}
    for flag in (False, True):
        m = load_model(cfg, tokenizer_texts=[r.text for r in corpus], seed=0)
        mc = cfg.model_copy(update={"gradient_checkpointing": flag})
        res = finetune(m.model, m.tokenizer, corpus, tc, mc, tmp_path / str(flag), show_progress=False)
        assert res.model.is_activation_checkpointing == flag  # the switch reached the model
        out[flag] = {k: v.detach().clone() for k, v in res.model.state_dict().items()}
    for k in out[False]:
        torch.testing.assert_close(out[True][k], out[False][k], rtol=1e-5, atol=1e-6, msg=k)


def test_device_map_is_passed_through(tiny, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    corpus, cfg = tiny
    loaded = load_model(cfg, tokenizer_texts=[r.text for r in corpus], seed=0)
    save_model(loaded.model, loaded.tokenizer, tmp_path / "m")
    hf = ModelConfig(kind="hf", name_or_path=str(tmp_path / "m"), device="cpu", device_map="cpu")
    assert placement_kwargs(hf, torch.device("cpu"), torch.float32) == {"device_map": "cpu"}
    seen = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kw):
        seen.append(kw.get("device_map"))
        return original(cls, *args, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    again = load_model(hf)
    assert seen == ["cpu"]  # accelerate placed the weights; load_model did not move them after
    assert again.fingerprint == loaded.fingerprint


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_loading_on_cpu_is_one_clear_message(tmp_path, bits):
    cfg = ModelConfig(kind="hf", name_or_path=str(tmp_path / "absent"), device="cpu", **{f"load_in_{bits}bit": True})
    with pytest.raises(DatablameError) as err:
        load_model(cfg)  # refused before any loading (the path does not even exist)
    assert f"model.load_in_{bits}bit needs a CUDA device" in err.value.problem
    assert "false" in err.value.fix


def test_quantized_loading_without_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    cfg = ModelConfig(kind="hf", name_or_path="x", load_in_4bit=True)
    with pytest.raises(DatablameError, match="needs the bitsandbytes package"):
        placement_kwargs(cfg, torch.device("cuda"), torch.bfloat16)


def test_placement_keys_are_checked_in_the_config():
    with pytest.raises(ValueError, match="choose one"):
        ModelConfig(kind="hf", name_or_path="x", load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(ValueError, match="applies to model.kind hf"):
        ModelConfig(kind="tiny", device_map="auto")


def test_checkpoint_features_use_the_runs_featurize_dtype(tiny_llama):
    """TracIn/TRAK features at other weights are taken in the same precision as the attributed
    model's: the same weights under another name give the same bfloat16 features."""
    import copy
    import dataclasses

    from influence_inputs import random_rows, tiny_inputs

    from datablame.features.checkpoints import features_of_model, featurizer_at
    from datablame.features.gradients import gradient_features

    ctx = tiny_inputs(tiny_llama, random_rows(5, seed=3), random_rows(2, seed=4), k=8)
    ctx = dataclasses.replace(ctx, attribution=ctx.attribution.model_copy(update={"featurize_dtype": "bfloat16"}))
    assert featurizer_at(ctx, tiny_llama).autocast is torch.bfloat16
    twin = copy.deepcopy(tiny_llama)
    twin._datablame_fingerprint = "a checkpoint with the same weights"
    at_twin = features_of_model(ctx, twin, label="twin", disk=False)
    torch.testing.assert_close(at_twin.rows, gradient_features(ctx).rows)
