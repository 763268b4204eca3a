"""Does the model produce the behaviour being blamed? One teacher-forced pass per query.

Attribution ranks rows by how they relate to a query's completion. When the model does not
produce that completion (an under-trained fine-tune, a typo in the query), the ranking answers
a question about a behaviour the model has not learned, and nothing in the scores says so.
For each query this module measures, under the attributed model:

- `loss`: mean next-token NLL of the completion tokens (nats/token, the training loss);
- `token_match`: the fraction of completion tokens that are the model's greedy (argmax) choice
  given the true prefix;
- `exact`: every completion token is the greedy choice. This is exactly "greedy decoding from
  the prompt reproduces the completion": by induction, greedy generation then follows the
  completion token by token, so no separate generation is needed to decide it;
- `greedy`: when not exact, what greedy decoding produces instead (as many tokens as the
  completion, decoded), so the user sees the behaviour the model does have;
- `base_loss`: the same loss under the model before fine-tuning, when it is at hand (a PEFT
  adapter switched off, or the run's saved `model/base`): a loss that did not fall means
  fine-tuning did not teach this completion.

`produces` is `exact`; results carry the numbers and, when it is false, the warning below.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from datablame.features.context import AttributionContext
from datablame.models.tokenize import IGNORE, Encoded, pad_batch, per_row_loss

log = logging.getLogger("datablame")

NOT_PRODUCED = ("the model does not produce this completion: scores rank rows by relevance to a "
                "behaviour it has not learned")


@dataclass
class QueryBehaviour:
    """What the attributed model does with one query's prompt (see the module docstring)."""

    loss: float  # nats/token over the completion tokens
    token_match: float  # fraction of completion tokens that are the greedy choice
    exact: bool  # greedy decoding reproduces the completion
    tokens: int  # completion tokens scored (after truncation to max_length)
    greedy: str | None = None  # what greedy decoding gives instead (None when exact)
    base_loss: float | None = None  # the same loss before fine-tuning, when available
    base_source: str | None = None

    @property
    def produces(self) -> bool:
        return self.exact

    def as_dict(self) -> dict:
        return {**asdict(self), "produces": self.produces, "warning": None if self.produces else NOT_PRODUCED}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _teacher_forced(model: nn.Module, enc: Encoded, pad_id: int, batch_size: int
                    ) -> tuple[list[float], list[float], list[int], list[list[int]]]:
    """Per row: completion loss, greedy token accuracy, completion length, greedy token ids at
    the completion positions."""
    losses, match, counts, greedy = [], [], [], []
    dev = _device(model)
    for start in range(0, len(enc), batch_size):
        part = pad_batch(enc.input_ids[start:start + batch_size], enc.labels[start:start + batch_size], pad_id)
        logits = model(input_ids=part["input_ids"].to(dev), attention_mask=part["attention_mask"].to(dev)).logits
        labels = part["labels"].to(dev)
        losses += per_row_loss(logits, labels).tolist()
        pred, target = logits[:, :-1].argmax(-1), labels[:, 1:]
        mask = target != IGNORE
        for i in range(len(target)):
            m = mask[i]
            n = int(m.sum())
            counts.append(n)
            match.append(float((pred[i][m] == target[i][m]).float().mean()) if n else float("nan"))
            greedy.append(pred[i][m].tolist())
    return losses, match, counts, greedy


@torch.no_grad()
def _greedy_text(model: nn.Module, tokenizer, prompt_ids: list[int], n_tokens: int) -> str:
    """Free-running greedy continuation of the prompt, `n_tokens` long (no sampling)."""
    dev = _device(model)
    ids = torch.tensor([prompt_ids], device=dev)
    out: list[int] = []
    past = None
    for _ in range(max(n_tokens, 1)):
        res = model(input_ids=ids if past is None else ids[:, -1:], past_key_values=past, use_cache=True)
        past = res.past_key_values
        nxt = int(res.logits[0, -1].argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=dev)], dim=1)
        if getattr(tokenizer, "eos_token_id", None) is not None and nxt == tokenizer.eos_token_id:
            break
    decode = getattr(tokenizer, "decode", None)
    return decode(out, skip_special_tokens=True) if decode else " ".join(map(str, out))


@contextlib.contextmanager
def _base_model(ctx: AttributionContext) -> Iterator[tuple[nn.Module | None, str | None]]:
    """The model before fine-tuning, when at hand: the PEFT adapter switched off, or the run's
    saved `model/base` (tiny runs). Yields (None, None) otherwise."""
    model = ctx.model
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            yield model, "the model with its LoRA adapter switched off"
        return
    if ctx.base_model is not None and Path(ctx.base_model).is_dir():
        from datablame.models import load_model

        loaded = load_model(ctx.model_cfg, path_override=str(ctx.base_model))
        loaded.model.eval().to(_device(model))
        try:
            yield loaded.model, str(ctx.base_model)
        finally:
            del loaded
        return
    yield None, None


def query_behaviour(ctx: AttributionContext, *, base: bool = True) -> list[QueryBehaviour]:
    """For each query of `ctx`: does the attributed model produce its completion (see module)."""
    if not ctx.queries:
        return []
    pad = ctx.tokenizer.pad_token_id or 0
    bs = ctx.attribution.batch_size
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        losses, match, counts, greedy = _teacher_forced(ctx.model, ctx.query_rows, pad, bs)
        out = []
        for i, (loss, acc, n) in enumerate(zip(losses, match, counts, strict=True)):
            exact = n > 0 and acc == 1.0
            text = None
            if not exact and n:
                labels = ctx.query_rows.labels[i]
                first = next(j for j, y in enumerate(labels) if y != IGNORE)
                text = _greedy_text(ctx.model, ctx.tokenizer, list(ctx.query_rows.input_ids[i][:first]), n)
            out.append(QueryBehaviour(loss=float(loss), token_match=float(acc), exact=bool(exact), tokens=n,
                                      greedy=text))
        if base:
            with _base_model(ctx) as (base_model, source):
                if base_model is not None:
                    base_losses = _teacher_forced(base_model, ctx.query_rows, pad, bs)[0]
                    for b, q in zip(base_losses, out, strict=True):
                        q.base_loss, q.base_source = float(b), source
    finally:
        ctx.model.train(was_training)
    missed = [q.query_id for q, b in zip(ctx.queries, out, strict=True) if not b.produces]
    if missed:
        log.warning("%d of %d queries: %s (%s)", len(missed), len(out), NOT_PRODUCED,
                    ", ".join(missed[:5]) + (" ..." if len(missed) > 5 else ""))
    return out
