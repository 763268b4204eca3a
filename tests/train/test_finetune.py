"""Fine-tuning: resume from a checkpoint gives the same model, LoRA touches only adapters,
subsets train on exactly the rows asked for."""

from __future__ import annotations

import shutil

import pytest
import torch

from datablame.config import TrainingConfig
from datablame.errors import DatablameError
from datablame.models import load_model
from datablame.train import finetune, list_checkpoints


@pytest.fixture
def setting(tiny_training_setting):
    return tiny_training_setting


def _fresh(corpus, model_cfg):
    return load_model(model_cfg, tokenizer_texts=[r.text for r in corpus], seed=0)


def _cfg(**kw):
    base = dict(max_steps=6, per_device_train_batch_size=4, learning_rate=5e-3, lr_scheduler_type="cosine",
                warmup_ratio=0.2, save_steps=3, logging_steps=100, seed=3)
    return TrainingConfig(**{**base, **kw})


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_from_checkpoint_reproduces_uninterrupted_run(setting, tmp_path):
    corpus, model_cfg = setting
    m = _fresh(corpus, model_cfg)
    full = finetune(m.model, m.tokenizer, corpus, _cfg(), model_cfg, tmp_path / "a", show_progress=False)
    assert [p.name for p in full.checkpoints] == ["checkpoint-3", "checkpoint-6"]
    want = _state(full.model)

    # simulate a run killed after step 3: drop what came later, train again into the same dir
    shutil.rmtree(tmp_path / "a" / "checkpoint-6")
    shutil.rmtree(tmp_path / "a" / "final")
    m = _fresh(corpus, model_cfg)
    resumed = finetune(m.model, m.tokenizer, corpus, _cfg(), model_cfg, tmp_path / "a", show_progress=False)
    got = _state(resumed.model)
    assert resumed.log_history and list_checkpoints(tmp_path / "a")[-1].name == "checkpoint-6"
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)

    # and a different seed (data order) gives a different model: the check above could fail
    m = _fresh(corpus, model_cfg)
    other = finetune(m.model, m.tokenizer, corpus, _cfg(seed=4), model_cfg, tmp_path / "b", show_progress=False)
    assert any(not torch.equal(_state(other.model)[k], want[k]) for k in want)


def test_lora_changes_only_adapter_weights(setting, tmp_path):
    corpus, model_cfg = setting
    m = _fresh(corpus, model_cfg)
    before = _state(m.model)
    cfg = _cfg(method="lora", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    res = finetune(m.model, m.tokenizer, corpus, cfg, model_cfg, tmp_path / "lora", show_progress=False)
    after = {k: v for k, v in res.model.state_dict().items()}
    lora_b = [k for k in after if "lora_B" in k]
    assert lora_b and any(after[k].abs().sum() > 0 for k in lora_b), "lora_B starts at 0 and must move"
    for k, v in after.items():
        if "lora_" in k:
            continue
        base_key = k.replace("base_model.model.", "").replace(".base_layer", "")
        torch.testing.assert_close(v, before[base_key], rtol=0, atol=0, msg=k)
    assert (res.final_dir / "adapter_config.json").is_file()


def test_subset_trains_on_exactly_those_rows(setting, tmp_path):
    corpus, model_cfg = setting
    m = _fresh(corpus, model_cfg)
    res = finetune(m.model, m.tokenizer, corpus, _cfg(max_steps=2, save_steps=100), model_cfg,
                   tmp_path / "s", indices=[0, 2, 4, 6, 8], show_progress=False)
    assert res.rows_trained == 5
    with pytest.raises(DatablameError, match="no rows"):
        finetune(m.model, m.tokenizer, corpus, _cfg(), model_cfg, tmp_path / "e", indices=[], show_progress=False)


def test_bad_lora_target_names_the_choices(setting, tmp_path):
    corpus, model_cfg = setting
    m = _fresh(corpus, model_cfg)
    cfg = _cfg(method="lora", lora={"target_modules": ["qkv"]})
    with pytest.raises(DatablameError, match="q_proj"):
        finetune(m.model, m.tokenizer, corpus, cfg, model_cfg, tmp_path / "x", show_progress=False)
