"""Completions: batched left-padded generation equals a plain greedy loop; the base of a LoRA
model is the same model with its adapter switched off."""

from __future__ import annotations

import copy

import pytest
import torch

from datablame.evaluate.generation import generate, generate_all, side_by_side
from datablame.evaluate.prompts import EvalPrompt
from datablame.evaluate.settings import DecodingSettings
from datablame.evaluate.sources import EvalModel

PROMPTS = ["Question: what colour is the apple?\nAnswer:", "Question: kiwi?", "the plum is colour number"]


def _greedy_by_hand(model, tok, prompt: str, n: int) -> str:
    """argmax one token at a time on the unpadded prompt, stopping at eos."""
    ids = tok(prompt)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    return tok.decode(new, skip_special_tokens=True)


def test_batched_greedy_equals_the_token_by_token_loop(tiny_pair):
    loaded = tiny_pair[0]
    got = generate(EvalModel("m", loaded), PROMPTS, DecodingSettings(max_new_tokens=6, batch_size=3))
    assert got == [_greedy_by_hand(loaded.model, loaded.tokenizer, p, 6) for p in PROMPTS]
    assert loaded.tokenizer.padding_side == "right"  # restored


def test_stop_strings_cut_the_completion(tiny_pair):
    loaded = tiny_pair[0]
    full = generate(EvalModel("m", loaded), PROMPTS[:1], DecodingSettings(max_new_tokens=8))[0]
    assert len(full) > 2
    cut = generate(EvalModel("m", loaded), PROMPTS[:1], DecodingSettings(max_new_tokens=8, stop=[full[2]]))[0]
    assert cut == full[: full.index(full[2])]


def test_lora_adapter_off_is_the_base(tiny_pair):
    from peft import LoraConfig, get_peft_model

    base = tiny_pair[0]
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(base.model),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tuned = copy.copy(base)
    tuned.model = peft_model
    d = DecodingSettings(max_new_tokens=5)
    off = EvalModel("base", tuned, adapter_off=True)
    assert generate(off, PROMPTS, d) == generate(EvalModel("b", base), PROMPTS, d)
    ids = base.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with off.active() as m, torch.no_grad():
        logits_off = m(ids).logits
    with torch.no_grad():
        logits_on = peft_model(ids).logits
        logits_base = base.model(ids).logits
    assert torch.allclose(logits_off, logits_base, atol=1e-6)
    assert not torch.allclose(logits_on, logits_base, atol=1e-3)  # the adapter does change the model
    assert "(adapter off)" in off.source


def test_side_by_side_rows(tiny_pair):
    prompts = [EvalPrompt("a", PROMPTS[0], ["red"]), EvalPrompt("b", PROMPTS[1])]
    outs = generate_all([EvalModel("base", tiny_pair[0]), EvalModel("finetuned", tiny_pair[1])], prompts,
                        DecodingSettings(max_new_tokens=3))
    rows = side_by_side(prompts, outs)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert set(rows[0]["completions"]) == {"base", "finetuned"}
    assert rows[1]["completions"]["finetuned"] == outs["finetuned"][1]
    assert rows[0]["references"] == ["red"]


@pytest.mark.parametrize("batch", [1, 2])
def test_batch_size_does_not_change_completions(tiny_pair, batch):
    em = EvalModel("m", tiny_pair[1])
    assert generate(em, PROMPTS, DecodingSettings(max_new_tokens=4, batch_size=batch)) == \
        generate(em, PROMPTS, DecodingSettings(max_new_tokens=4, batch_size=3))


def test_a_newline_stop_does_not_cut_an_answer_that_opens_with_a_newline():
    from datablame.evaluate.generation import _cut

    assert _cut("\n The capital is Brisa.\nQuestion: next", ["\n"]) == "\n The capital is Brisa."
    assert _cut(" Brisa.\nmore", ["\n", "."]) == " Brisa"
    assert _cut("\n\n", ["\n"]) == "\n\n" and _cut("no stop here", ["\n"]) == "no stop here"
