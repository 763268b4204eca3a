"""Does the model produce the completion being blamed: measured on a tiny Llama trained to
reproduce one completion and not another."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from datablame.config import AttributionConfig, ModelConfig
from datablame.data.corpus import Corpus, Query, Row
from datablame.features.behaviour import NOT_PRODUCED, query_behaviour
from datablame.features.context import AttributionContext
from datablame.models.tokenize import IGNORE, Encoded

PROMPT, TAUGHT, OTHER = [5, 9, 14, 3], [21, 33, 40, 7], [60, 61, 62, 63]


class _Tok(SimpleNamespace):
    pad_token_id = 0
    eos_token_id = None

    @staticmethod
    def decode(ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def _encoded(completions: list[list[int]]) -> Encoded:
    return Encoded([PROMPT + c for c in completions], [[IGNORE] * len(PROMPT) + c for c in completions])


@pytest.fixture(scope="module")
def taught_model():
    """A tiny Llama fitted on PROMPT -> TAUGHT until it reproduces it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from datablame.models.tokenize import pad_batch

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32))
    batch = pad_batch(*(lambda e: (e.input_ids, e.labels))(_encoded([TAUGHT])), 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _ctx(model, completions, base_model=None) -> AttributionContext:
    rows = _encoded([TAUGHT])
    return AttributionContext(
        model=model, tokenizer=_Tok(), corpus=Corpus([Row("r0", "p", "c")]), rows=rows,
        queries=[Query("p", "c", f"q{i}") for i in range(len(completions))], query_rows=_encoded(completions),
        attribution=AttributionConfig(), model_cfg=ModelConfig(kind="tiny"), base_model=base_model,
    )


def test_taught_completion_is_produced_and_other_is_not(taught_model, caplog):
    with caplog.at_level(logging.WARNING, logger="datablame"):
        taught, other = query_behaviour(_ctx(taught_model, [TAUGHT, OTHER]))
    assert taught.exact and taught.produces and taught.token_match == 1.0 and taught.tokens == len(TAUGHT)
    assert taught.greedy is None and taught.as_dict()["warning"] is None
    assert not other.exact and not other.produces and other.token_match < 0.5
    assert other.loss > taught.loss + 1.0  # the untaught completion is much less likely
    # greedy decoding gives the behaviour the model has: the taught completion
    assert other.greedy == " ".join(map(str, TAUGHT))
    assert other.as_dict()["warning"] == NOT_PRODUCED
    assert "1 of 2 queries" in caplog.text and "q1" in caplog.text and NOT_PRODUCED in caplog.text


def test_greedy_flag_equals_free_running_generation(taught_model):
    """exact (all teacher-forced argmaxes right) agrees with what greedy generation produces."""
    prompt = torch.tensor([PROMPT])
    gen = taught_model.generate(prompt, max_new_tokens=len(TAUGHT), do_sample=False, pad_token_id=0)[0, len(PROMPT):]
    for completion in (TAUGHT, OTHER, TAUGHT[:2] + OTHER[2:]):
        (b,) = query_behaviour(_ctx(taught_model, [completion]), base=False)
        assert b.exact == (gen.tolist()[: len(completion)] == completion)


def test_base_loss_from_the_saved_base_model(taught_model, tmp_path, monkeypatch):
    """With the run's saved base model the loss before fine-tuning is reported beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import datablame.models as models

    torch.manual_seed(1)
    untrained = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=32)).eval()
    loads = []

    def fake_load(cfg, path_override=None):
        loads.append(path_override)
        return SimpleNamespace(model=untrained, tokenizer=_Tok())

    monkeypatch.setattr(models, "load_model", fake_load)
    (b,) = query_behaviour(_ctx(taught_model, [TAUGHT], base_model=tmp_path))
    assert loads == [str(tmp_path)] and b.base_source == str(tmp_path)
    assert b.base_loss is not None and b.base_loss > b.loss + 1.0  # fine-tuning taught it
    (nb,) = query_behaviour(_ctx(taught_model, [TAUGHT], base_model=None))
    assert nb.base_loss is None and nb.base_source is None
