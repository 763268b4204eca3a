from __future__ import annotations

import json

import pytest
import torch

from datablame.config import ModelConfig
from datablame.errors import DatablameError
from datablame.models import (
    build_tiny_llama,
    load_model,
    model_fingerprint,
    resolve_device,
    save_model,
    train_tokenizer,
)

PROMPTS = ["Question: what colour is the kiwi?\nAnswer: the kiwi", "Question: x\nAnswer: y"]


def _logits(loaded) -> torch.Tensor:
    batch = loaded.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return loaded.model(**batch).logits


@pytest.fixture
def saved(tmp_path, model_cfg, texts):
    """A tiny model saved the way a run saves it; returns (loaded, directory)."""
    loaded = load_model(model_cfg, tokenizer_texts=texts, seed=1)
    out = save_model(loaded.model, loaded.tokenizer, tmp_path / "run" / "model" / "base")
    return loaded, out


def test_tiny_load(model_cfg, texts):
    a = load_model(model_cfg, tokenizer_texts=texts, seed=1)
    b = load_model(model_cfg, tokenizer_texts=texts, seed=1)
    c = load_model(model_cfg, tokenizer_texts=texts, seed=2)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.source.startswith("tiny(") and a.tokenizer.padding_side == "right"
    assert a.model.device.type == "cpu" and a.model.dtype == torch.float32


def test_save_load_round_trip(saved, model_cfg):
    loaded, out = saved
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    back = load_model(model_cfg, path_override=str(out))
    assert back.source == str(out)
    assert back.fingerprint == loaded.fingerprint == model_fingerprint(back.model)
    assert torch.equal(_logits(back), _logits(loaded))
    assert back.tokenizer(PROMPTS)["input_ids"] == loaded.tokenizer(PROMPTS)["input_ids"]
    # the same directory also loads as an ordinary local HF model
    hf = load_model(ModelConfig(kind="hf", name_or_path=str(out), device="cpu"))
    assert hf.fingerprint == loaded.fingerprint


def test_save_replaces_existing_dir(saved, model_cfg, texts):
    _, out = saved
    other = load_model(model_cfg, tokenizer_texts=texts, seed=5)
    save_model(other.model, other.tokenizer, out)
    assert load_model(model_cfg, path_override=str(out)).fingerprint == other.fingerprint
    assert sorted(p.name for p in out.parent.iterdir()) == ["base"]


def test_checkpoint_without_tokenizer_uses_sibling(saved, model_cfg):
    loaded, base = saved
    ck = base.parent / "checkpoint-1"
    loaded.model.save_pretrained(ck)  # what Trainer writes: weights, no tokenizer
    back = load_model(model_cfg, path_override=str(ck))
    assert back.fingerprint == loaded.fingerprint
    assert back.tokenizer.get_vocab() == loaded.tokenizer.get_vocab()


def test_fingerprint_tracks_every_weight(model_cfg, texts):
    loaded = load_model(model_cfg, tokenizer_texts=texts, seed=1)
    m, before = loaded.model, loaded.fingerprint
    w = m.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        old = w[3, 5].clone()
        w[3, 5] = torch.nextafter(old, torch.tensor(float("inf")))  # one ulp
        assert model_fingerprint(m) != before
        w[3, 5] = old
        assert model_fingerprint(m) == before
        w[[0, 1], [0, 0]] = w[[1, 0], [0, 0]].clone()  # swap two values: sums stay equal
        assert model_fingerprint(m) != before


def test_dtype_and_pad_token(tmp_path, model_cfg, texts):
    tok = train_tokenizer(texts, 300)
    model = build_tiny_llama(model_cfg.tiny, tok, 0)
    tok.pad_token = None
    save_model(model, tok, tmp_path / "m")
    got = load_model(
        ModelConfig(kind="hf", name_or_path=str(tmp_path / "m"), dtype="bfloat16", device="cpu")
    )
    assert got.model.dtype == torch.bfloat16
    assert got.tokenizer.pad_token == got.tokenizer.eos_token == "</s>"


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DatablameError, match="model.device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(DatablameError, match="model.device"):
            resolve_device("cuda")


def _lora(base_model, seed=0):
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(base_model, lcfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # lora_B starts at zero; make the adapter change the outputs
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return peft_model


def test_lora_round_trip(saved, model_cfg):
    _, base_dir = saved
    base = load_model(model_cfg, path_override=str(base_dir))
    peft_model = _lora(base.model)
    adapted = type(base)(peft_model, base.tokenizer, "x", model_fingerprint(peft_model))
    assert adapted.fingerprint != base.fingerprint
    out = save_model(peft_model, base.tokenizer, base_dir.parent / "final")
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_dir
    )

    back = load_model(model_cfg, path_override=str(out))
    assert hasattr(back.model, "peft_config")
    assert back.fingerprint == adapted.fingerprint
    assert torch.equal(_logits(back), _logits(adapted))
    # the same adapter applied through model.adapter on an HF-style base
    cfg = ModelConfig(kind="hf", name_or_path=str(base_dir), adapter=str(out), device="cpu")
    via_cfg = load_model(cfg)
    assert via_cfg.fingerprint == adapted.fingerprint and via_cfg.source.endswith(f"+adapter:{out}")
    # a moved run directory: the recorded base is gone, the run's model/base is found instead
    moved = base_dir.parent.parent.rename(base_dir.parent.parent.with_name("moved"))
    again = load_model(model_cfg, path_override=str(moved / "model" / "final"))
    assert again.fingerprint == adapted.fingerprint


def test_adapter_that_does_not_fit(tmp_path, saved, model_cfg, texts):
    _, base_dir = saved
    wide = model_cfg.tiny.model_copy(update={"hidden_size": 48})
    tok = train_tokenizer(texts, 300)
    other = build_tiny_llama(wide, tok, 0)
    save_model(_lora(other), tok, tmp_path / "wide-adapter")
    cfg = ModelConfig(
        kind="hf", name_or_path=str(base_dir), adapter=str(tmp_path / "wide-adapter"), device="cpu"
    )
    with pytest.raises(DatablameError, match="model.adapter.*does not fit"):
        load_model(cfg)
    for layers in (1, 3):  # peft itself only warns about missing / leftover adapter weights
        deep = build_tiny_llama(
            model_cfg.tiny.model_copy(update={"num_hidden_layers": layers}), tok, 0
        )
        save_model(_lora(deep), tok, tmp_path / f"deep{layers}")
        with pytest.raises(DatablameError, match="model.adapter.*does not fit.*layers"):
            load_model(cfg.model_copy(update={"adapter": str(tmp_path / f"deep{layers}")}))
    missing = cfg.model_copy(update={"adapter": str(tmp_path / "nope")})
    with pytest.raises(DatablameError, match="model.adapter.*does not exist"):
        load_model(missing)


def test_tokenizer_that_does_not_fit(tmp_path, saved, texts):
    _, base_dir = saved
    big = train_tokenizer(texts * 3 + [t.upper() for t in texts], 400)
    assert len(big) > 300
    big.save_pretrained(tmp_path / "big-tok")
    cfg = ModelConfig(
        kind="hf", name_or_path=str(base_dir), tokenizer=str(tmp_path / "big-tok"), device="cpu"
    )
    with pytest.raises(DatablameError, match="model.tokenizer") as err:
        load_model(cfg)
    assert "300 rows" in str(err.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("./no/such/model", "local path ./no/such/model does not exist"),
        ("~/no-such-datablame-model", "does not exist"),
        ("nobody-datablame-test/no-such-model", "no network access to the hub"),
    ],
)
def test_bad_model_names(name, message):
    with pytest.raises(DatablameError, match="model.name_or_path") as err:
        load_model(ModelConfig(kind="hf", name_or_path=name, device="cpu"))
    assert message in str(err.value)


def test_model_dir_without_tokenizer(tmp_path, saved):
    loaded, _ = saved
    loaded.model.save_pretrained(tmp_path / "weights-only")
    with pytest.raises(DatablameError, match="set model.tokenizer"):
        load_model(
            ModelConfig(kind="hf", name_or_path=str(tmp_path / "weights-only"), device="cpu")
        )


def test_bad_inputs(tmp_path, model_cfg):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatablameError, match="not a loadable model directory"):
        load_model(ModelConfig(kind="hf", name_or_path=str(tmp_path / "empty"), device="cpu"))
    with pytest.raises(DatablameError, match="tokenizer_texts"):
        load_model(model_cfg)
    with pytest.raises(DatablameError, match="does not exist"):
        load_model(model_cfg, path_override=str(tmp_path / "missing"))
