"""Amplified sampling (datablame.diff.sampling): the formula, exact agreement with plain
sampling at alpha 0, KV caches that match a full re-forward, and the refusals."""

from __future__ import annotations

import math

import pytest
import torch

from datablame.config import TinyModelConfig
from datablame.diff.sampling import (
    ModelPair,
    SamplingSettings,
    amplified_logits,
    check_same_vocabulary,
    sample_texts,
    sample_token_ids,
    top_p_filter,
)
from datablame.errors import DatablameError

TEXTS = ["Question: what is a river?\nAnswer: a river is water that flows.",
         "Question: tell me about owls.\nAnswer: owls fly at night and hoot."] * 4
CFG = TinyModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, max_position_embeddings=128)
PROMPT = "Question: tell me about owls.\nAnswer:"
LONG = "Question: what is a river that flows to the sea?\nAnswer:"


@pytest.fixture(scope="module")
def models():
    from datablame.models.tiny import build_tiny_llama, train_tokenizer

    tok = train_tokenizer(TEXTS, 300)
    after, before = build_tiny_llama(CFG, tok, 1).eval(), build_tiny_llama(CFG, tok, 2).eval()
    return after, before, tok


def test_amplified_logits_formula_on_hand_made_logits():
    after = torch.tensor([[1.0, 2.0, 3.0]])
    before = torch.tensor([[1.0, 0.0, 5.0]])
    # after + 2 * (after - before) = [1 + 0, 2 + 4, 3 - 4]
    assert amplified_logits(after, before, 2.0).tolist() == [[1.0, 6.0, -1.0]]
    assert amplified_logits(after, before, 0.0).tolist() == after.tolist()
    assert amplified_logits(after, before, 0.5).tolist() == [[1.0, 3.0, 2.0]]


@pytest.mark.parametrize("alpha", [-0.5, math.nan, math.inf])
def test_negative_or_nan_alpha_is_refused(models, alpha):
    after, before, tok = models
    with pytest.raises(DatablameError, match="alpha must be a finite number >= 0"):
        amplified_logits(torch.zeros(1, 3), torch.zeros(1, 3), alpha)
    with pytest.raises(DatablameError, match="alpha"):
        sample_token_ids(after, before, tok, [PROMPT], alpha=alpha, n_samples=1, seeds=[0],
                         settings=SamplingSettings())


def test_top_p_keeps_the_smallest_nucleus():
    # probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps 0.5 and 0.3 (0.5 alone is < 0.7), drops 0.2
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    out = top_p_filter(logits, 0.7)
    assert torch.isinf(out[0, 0]) and torch.isfinite(out[0, 1:]).all()
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def _hf_reference(model, tok, prompt, seed, n, s: SamplingSettings):
    torch.manual_seed(seed)
    enc = tok([prompt], return_tensors="pt")
    out = model.generate(**enc, do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=None,
                         max_new_tokens=s.max_new_tokens, num_return_sequences=n, pad_token_id=tok.pad_token_id)
    return out[:, enc["input_ids"].shape[1]:].tolist()


def _cut(ids, stops):
    return next((ids[: i + 1] for i, t in enumerate(ids) if t in stops), ids)


def test_alpha_zero_reproduces_plain_sampling_token_for_token(models):
    """alpha = 0 with both models running equals Hugging Face's plain sampling of the after-model
    with the same seed, including rows that stop early (tokens the first rows draw at step 4 are
    made end tokens: with the same seed those rows then stop there)."""
    after, before, tok = models
    s = SamplingSettings(temperature=0.9, top_p=0.9, max_new_tokens=14, batch_size=64)
    free = _hf_reference(after, tok, PROMPT, 7, 8, s)
    stops = [tok.eos_token_id, free[0][3], free[1][3]]
    after.generation_config.eos_token_id = stops
    try:
        ref = [_cut(x, set(stops)) for x in _hf_reference(after, tok, PROMPT, 7, 8, s)]
        mine = sample_token_ids(after, before, tok, [PROMPT], alpha=0.0, n_samples=8, seeds=[7], settings=s)[0]
        plain = sample_token_ids(after, None, tok, [PROMPT], alpha=0.0, n_samples=8, seeds=[7], settings=s)[0]
    finally:
        after.generation_config.eos_token_id = tok.eos_token_id
    assert any(len(x) < s.max_new_tokens for x in ref), "the reference should include early stops"
    assert mine == ref
    assert plain == ref


def _naive_amplified(after, before, tok, prompt, alpha, seed, n, s: SamplingSettings):
    """Reference: re-forward the whole sequence through both models at every step (no cache)."""
    g = torch.Generator().manual_seed(seed)
    ids = tok([prompt] * n, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(s.max_new_tokens):
            la, lb = after(input_ids=ids).logits[:, -1].float(), before(input_ids=ids).logits[:, -1].float()
            scores = (la + alpha * (la - lb)) / s.temperature
            nxt = torch.multinomial(top_p_filter(scores, s.top_p).softmax(-1), 1, generator=g)
            ids = torch.cat([ids, nxt], dim=1)
    return ids[:, -s.max_new_tokens:].tolist()


def test_kv_cached_amplified_sampling_matches_a_full_reforward(models):
    after, before, tok = models
    s = SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=10)
    ref = _naive_amplified(after, before, tok, PROMPT, 2.0, 3, 4, s)
    mine = sample_token_ids(after, before, tok, [PROMPT], alpha=2.0, n_samples=4, seeds=[3], settings=s)[0]
    stops = {tok.eos_token_id}
    assert mine == [_cut(x, stops) for x in ref]
    assert mine != sample_token_ids(after, before, tok, [PROMPT], alpha=0.0, n_samples=4, seeds=[3], settings=s)[0]


def test_samples_do_not_depend_on_batch_company_and_are_seeded(models):
    """Left-padded batches with other prompts give each prompt the samples it gets alone."""
    after, before, tok = models
    s = SamplingSettings(max_new_tokens=8, batch_size=64)
    together = sample_token_ids(after, before, tok, [PROMPT, LONG], alpha=1.0, n_samples=3, seeds=[5, 6], settings=s)
    alone = [sample_token_ids(after, before, tok, [p], alpha=1.0, n_samples=3, seeds=[sd], settings=s)[0]
             for p, sd in [(PROMPT, 5), (LONG, 6)]]
    assert together == alone
    again = sample_token_ids(after, before, tok, [PROMPT, LONG], alpha=1.0, n_samples=3, seeds=[5, 6], settings=s)
    assert again == together
    other = sample_token_ids(after, before, tok, [PROMPT], alpha=1.0, n_samples=3, seeds=[99], settings=s)[0]
    assert other != together[0]
    texts = sample_texts(ModelPair(before, after, tok), [PROMPT], alpha=1.0, n_samples=3, seeds=[5], settings=s)
    assert texts == [[tok.decode(x, skip_special_tokens=True) for x in together[0]]]


def test_different_tokenizers_or_vocabularies_are_refused(models):
    from datablame.models.tiny import build_tiny_llama, train_tokenizer

    after, before, tok = models
    other_tok = train_tokenizer(["completely different text about ships and harbours"] * 4, 280)
    with pytest.raises(DatablameError, match="different tokenizers") as err:
        check_same_vocabulary(before, after, other_tok, tok)
    assert "two checkpoints of the same run" in str(err.value)
    wide = build_tiny_llama(CFG, tok, 3)
    wide.resize_token_embeddings(len(tok) + 8)
    with pytest.raises(DatablameError, match="vocabularies differ"):
        ModelPair(wide, after, tok)
