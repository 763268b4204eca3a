"""Completions of every compared model for the same prompts, with the same decoding settings.

Prompts are batched with left padding (decoder-only models continue from the right end);
a completion is the decoded new tokens (special tokens skipped), cut at the first `stop`
string after its leading whitespace. Greedy by default, so the same model and prompts give the same completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from datablame.evaluate.prompts import EvalPrompt
from datablame.evaluate.settings import DecodingSettings
from datablame.evaluate.sources import EvalModel


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _cut(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string found after its leading whitespace (a model that
    opens its answer with a newline is not cut to nothing by a newline stop)."""
    lead = len(text) - len(text.lstrip())
    ends = [i for s in stop if s and (i := text.find(s, lead)) >= 0]
    return text[: min(ends)] if ends else text


def _gen_kwargs(tokenizer: Any, d: DecodingSettings) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "max_new_tokens": d.max_new_tokens,
        "do_sample": d.do_sample,
        "num_beams": d.num_beams,
        "repetition_penalty": d.repetition_penalty,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if d.do_sample:
        kw.update(temperature=d.temperature, top_p=d.top_p)
    else:  # keep a model's own sampling defaults from warning about unused settings
        kw.update(temperature=None, top_p=None, top_k=None)
    return kw


@torch.no_grad()
def generate(em: EvalModel, prompts: Sequence[str], decoding: DecodingSettings) -> list[str]:
    """The completions of `em` for `prompts`, in order."""
    tok = em.tokenizer
    kw = _gen_kwargs(tok, decoding)
    side = tok.padding_side
    out: list[str] = []
    try:
        tok.padding_side = "left"
        with em.active() as model:
            device = _device(model)
            if decoding.do_sample:
                torch.manual_seed(decoding.seed)
            for start in range(0, len(prompts), decoding.batch_size):
                batch = list(prompts[start : start + decoding.batch_size])
                enc = tok(batch, return_tensors="pt", padding=True).to(device)
                ids = model.generate(**enc, **kw)
                new = ids[:, enc["input_ids"].shape[1]:]
                out += [_cut(t, decoding.stop) for t in tok.batch_decode(new, skip_special_tokens=True)]
    finally:
        tok.padding_side = side
    return out


def generate_all(
    models: Sequence[EvalModel], prompts: Sequence[EvalPrompt], decoding: DecodingSettings
) -> dict[str, list[str]]:
    """model name -> its completions of `prompts`."""
    texts = [p.prompt for p in prompts]
    return {m.name: generate(m, texts, decoding) for m in models}


def side_by_side(prompts: Sequence[EvalPrompt], completions: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One row per prompt: id, prompt, references and each model's completion."""
    return [
        {"id": p.id, "prompt": p.prompt, "references": p.references,
         "completions": {name: outs[i] for name, outs in completions.items()}}
        for i, p in enumerate(prompts)
    ]
