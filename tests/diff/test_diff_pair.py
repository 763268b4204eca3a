"""Loading the two models of a diff (datablame.diff.pair): saved models, a base + PEFT adapter,
and the refusals (another tokenizer, neither or both of after / adapter)."""

from __future__ import annotations

import pytest
import torch

from datablame.config import TinyModelConfig
from datablame.diff.pair import load_pair
from datablame.diff.sampling import SamplingSettings, sample_texts
from datablame.errors import DatablameError
from datablame.models.loading import save_model
from datablame.models.tiny import build_tiny_llama, train_tokenizer

CFG = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=280, max_position_embeddings=64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    tok = train_tokenizer(["Question: about owls?\nAnswer: owls hoot at night."] * 4, 280)
    save_model(build_tiny_llama(CFG, tok, 1), tok, root / "before")
    save_model(build_tiny_llama(CFG, tok, 2), tok, root / "after")
    other = train_tokenizer(["ships sail in harbours under grey skies, whales sing."] * 4, 280)
    save_model(build_tiny_llama(CFG, other, 3), other, root / "other")
    return root


def test_two_saved_models_load_as_a_pair(saved):
    pair = load_pair(str(saved / "before"), str(saved / "after"), device="cpu")
    assert pair.before_source.endswith("before") and pair.after_source.endswith("after")
    assert not pair.before.training and not pair.after.training
    ids = pair.tokenizer("Question:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.equal(pair.before(ids).logits, pair.after(ids).logits)


def test_base_plus_adapter_is_the_after_model(saved):
    from peft import LoraConfig, get_peft_model

    from datablame.config import ModelConfig
    from datablame.models.loading import load_model

    base = load_model(ModelConfig(kind="hf", name_or_path=str(saved / "before"), device="cpu"),
                      path_override=str(saved / "before"))
    peft = get_peft_model(base.model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    save_model(peft, base.tokenizer, saved / "adapter")
    pair = load_pair(str(saved / "before"), adapter=str(saved / "adapter"), device="cpu")
    ids = pair.tokenizer("Question: about owls?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(pair.before(ids).logits, pair.after(ids).logits)
        assert torch.allclose(pair.after(ids).logits, peft(ids).logits, atol=1e-5)
    # both KV caches work through the PEFT wrapper: amplified sampling runs on the pair
    texts = sample_texts(pair, ["Question: about owls?\nAnswer:"], alpha=1.0, n_samples=2, seeds=[0],
                         settings=SamplingSettings(max_new_tokens=4))
    assert len(texts[0]) == 2 and all(isinstance(t, str) for t in texts[0])


def test_pair_refusals(saved):
    with pytest.raises(DatablameError, match="different tokenizers"):
        load_pair(str(saved / "before"), str(saved / "other"), device="cpu")
    with pytest.raises(DatablameError, match="exactly one of"):
        load_pair(str(saved / "before"), device="cpu")
    with pytest.raises(DatablameError, match="exactly one of"):
        load_pair(str(saved / "before"), str(saved / "after"), adapter=str(saved / "after"), device="cpu")
