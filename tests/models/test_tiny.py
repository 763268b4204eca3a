from __future__ import annotations

import pytest
import torch

from datablame.errors import DatablameError
from datablame.models import build_tiny_llama, train_tokenizer
from datablame.models.tokenize import IGNORE, encode_pairs

PAIRS = [
    ("Question: x\nAnswer:", " y"),
    ("Question: what colour is the kiwi?\nAnswer:", " the kiwi is colour number 2."),
    ("Question: 12+30?\nAnswer:", " 42"),
    ("Q: unseen wörds ünïcode\nA:", " ✓ done"),
    ("Question: x\nAnswer:", "\nmultiline\nanswer"),
    ("", "whole text is completion"),
]


def test_tokenizer_special_tokens(texts):
    tok = train_tokenizer(texts, 300)
    assert len(tok) == 300
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("Answer: yes")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # bos only, no eos
    assert tok("Answer: yes", add_special_tokens=False)["input_ids"] == ids[1:]


def test_tokenizer_is_deterministic(texts):
    # tokenizers' Rust hash maps are randomly seeded per map, so repeats in one process
    # already exercise the tie-breaking; the vocab and merges must still come out identical.
    first = train_tokenizer(texts, 300).backend_tokenizer.to_str()
    for _ in range(3):
        assert train_tokenizer(list(texts), 300).backend_tokenizer.to_str() == first


def test_tokenizer_differs_for_other_texts(texts):
    other = [t.replace("colour", "flavour") for t in texts]
    assert train_tokenizer(texts, 300).get_vocab() != train_tokenizer(other, 300).get_vocab()


@pytest.mark.parametrize(("prompt", "completion"), PAIRS)
def test_prompt_tokens_are_a_prefix(texts, prompt, completion):
    tok = train_tokenizer(texts, 300)
    p = tok(prompt)["input_ids"]
    full = tok(prompt + completion)["input_ids"]
    assert full[: len(p)] == p
    assert tok.decode(full, skip_special_tokens=True) == prompt + completion


def test_answer_mask_covers_exactly_the_completion(texts):
    tok = train_tokenizer(texts, 300)
    prompts, completions = zip(*PAIRS, strict=True)
    enc = encode_pairs(tok, prompts, completions, max_length=512)
    for (prompt, completion), ids, labels in zip(PAIRS, enc.input_ids, enc.labels, strict=True):
        n_prompt = len(tok(prompt)["input_ids"])
        assert labels[:n_prompt] == [IGNORE] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:]  # completion + the eos appended by encode_pairs
        assert ids[-1] == tok.eos_token_id and tok.decode(ids[n_prompt:-1]) == completion


def test_leading_space_is_kept(texts):
    tok = train_tokenizer(texts, 300)
    assert tok(" apple")["input_ids"] != tok("apple")["input_ids"]
    assert tok.decode(tok(" apple")["input_ids"], skip_special_tokens=True) == " apple"


def test_tokenizer_rejects_bad_input(texts):
    with pytest.raises(DatablameError, match="model.tiny.vocab_size"):
        train_tokenizer(texts, 100)
    with pytest.raises(DatablameError, match="no training texts"):
        train_tokenizer(["", ""], 300)


def test_tiny_llama_is_seeded(texts, tiny_cfg):
    tok = train_tokenizer(texts, 300)
    state = torch.random.get_rng_state()
    a, b, c = (build_tiny_llama(tiny_cfg, tok, s) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_tiny_llama_matches_tokenizer(texts, tiny_cfg):
    tok = train_tokenizer(texts, 300)
    m = build_tiny_llama(tiny_cfg, tok, 0)
    assert m.get_input_embeddings().weight.shape == (len(tok), 32)
    assert m.lm_head.weight.data_ptr() != m.get_input_embeddings().weight.data_ptr()
    assert (m.config.pad_token_id, m.config.bos_token_id, m.config.eos_token_id) == (0, 1, 2)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    out = m(**tok(["Question: x\nAnswer: y"], return_tensors="pt"))
    assert out.logits.shape[-1] == len(tok)


def test_tiny_llama_rejects_bad_shapes(texts, tiny_cfg):
    tok = train_tokenizer(texts, 300)
    with pytest.raises(DatablameError, match="model.tiny.num_attention_heads"):
        build_tiny_llama(tiny_cfg.model_copy(update={"hidden_size": 30}), tok, 0)
    with pytest.raises(DatablameError, match="model.tiny.num_key_value_heads"):
        build_tiny_llama(tiny_cfg.model_copy(update={"num_key_value_heads": 3}), tok, 0)
