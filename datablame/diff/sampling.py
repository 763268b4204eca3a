"""Logit diff amplification: sample from `after + alpha * (after - before)`.

Two causal LMs that share a tokenizer (two checkpoints of a run, a base model and the same
model with a PEFT adapter, two Hugging Face models of one family) are run side by side on the
same token prefix. At every decoding step the next-token logits are

    amplified = after + alpha * (after - before)          (alpha >= 0, natural-log units)

so alpha = 0 is plain sampling of the after-model, and alpha > 0 pushes every token by how much
more the after-model likes it than the before-model did: a behaviour that fine-tuning made
slightly more likely (a rare output of the after-model) becomes a frequent one, which is what
makes a rare behaviour findable with a few hundred samples.

Decoding (`SamplingSettings`): the amplified logits are divided by `temperature`, cut by
nucleus (`top_p`) filtering exactly as Hugging Face's `TopPLogitsWarper` does, and sampled with
`torch.multinomial`; rows that emitted an end-of-sequence token keep drawing (their draws are
replaced by padding), as `generate` does, so with alpha = 0 the tokens are those of
`after.generate(do_sample=True, temperature=..., top_p=..., top_k=None)` after
`torch.manual_seed(seed)`, token for token.

Cost: both models keep a KV cache; the prompt is read once (prefill) and each step feeds one
new token per row to each model, so a step costs two single-token forwards (about twice plain
sampling). Prompts are left-padded and batched with their samples (`batch_size` rows at most).

Determinism: each prompt draws from its own `torch.Generator` seeded by its entry of `seeds`,
so a prompt's samples depend on its seed, the settings and `batch_size` only, never on which
other prompts share its batch (a resumed scan redraws exactly the cells it lacks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from datablame.errors import DatablameError


class SamplingSettings(BaseModel):
    """How amplified samples are decoded (alpha is chosen per call: the scan sweeps it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, gt=0.0, description="divides the amplified logits before sampling")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling: keep the smallest set of tokens "
                         "whose probability sums to at least top_p (1 = keep all)")
    max_new_tokens: int = Field(32, ge=1, description="tokens generated per sample at most")
    batch_size: int = Field(64, ge=1, description="rows (prompt x sample) decoded together")
    seed: int = Field(0, ge=0, description="base seed; the scan derives one seed per (prompt, alpha)")


@dataclass
class ModelPair:
    """The before- and after-model (eval mode, same device) and their shared tokenizer."""

    before: Any
    after: Any
    tokenizer: Any
    before_source: str = "in memory"
    after_source: str = "in memory"

    def __post_init__(self) -> None:
        check_same_vocabulary(self.before, self.after, self.tokenizer, self.tokenizer)


def check_alpha(alpha: float) -> float:
    """alpha as a float; NaN, infinite or negative alphas are refused (a negative alpha would
    sample *away* from what fine-tuning taught, which is not this tool's question)."""
    a = float(alpha)
    if not math.isfinite(a) or a < 0:
        raise DatablameError(
            f"amplification alpha must be a finite number >= 0, got {alpha!r}",
            "use alpha = 0 (plain sampling of the after-model) or a positive strength such as 0.5, 1, 2 or 4",
        )
    return a


def amplified_logits(after: torch.Tensor, before: torch.Tensor, alpha: float) -> torch.Tensor:
    """after + alpha * (after - before), in float32 (logits in nats; same shape as the inputs)."""
    a = check_alpha(alpha)
    if after.shape != before.shape:
        raise DatablameError(
            f"before- and after-model logits differ in shape ({tuple(before.shape)} vs {tuple(after.shape)})",
            "use two models with the same vocabulary (two checkpoints of one run, or a base and its adapter)",
        )
    after, before = after.float(), before.float()
    return after + a * (after - before)


def _logit_width(model: Any) -> int:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is not None:
        return int(out.weight.shape[0])
    return int(model.config.vocab_size)


def check_same_vocabulary(before: Any, after: Any, tok_before: Any, tok_after: Any) -> None:
    """Refuse a pair whose tokenizers or output vocabularies differ: their logits would not
    be about the same tokens, so their difference would mean nothing."""
    fix = ("amplify two models of one family: two checkpoints of the same run, a base model and its PEFT "
           "adapter, or a model and its fine-tune (same tokenizer)")
    if tok_before is not tok_after:
        va, vb = tok_before.get_vocab(), tok_after.get_vocab()
        if va != vb:
            diff = sorted(set(va.items()) ^ set(vb.items()), key=str)[:3]
            raise DatablameError(
                f"the before- and after-models use different tokenizers ({len(va)} vs {len(vb)} tokens; "
                f"e.g. {[t for t, _ in diff]} differ)", fix)
        specials = ("bos_token_id", "eos_token_id", "pad_token_id")
        if any(getattr(tok_before, s) != getattr(tok_after, s) for s in specials):
            raise DatablameError("the before- and after-model tokenizers have different special tokens "
                                 "(bos / eos / pad)", fix)
    wa, wb = _logit_width(before), _logit_width(after)
    if wa != wb:
        raise DatablameError(f"the before-model scores {wa} tokens and the after-model {wb}: their vocabularies "
                             "differ", fix)
    if len(tok_after) > wb:
        raise DatablameError(f"the tokenizer has {len(tok_after)} tokens but the models score only {wb}", fix)


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering as Hugging Face's TopPLogitsWarper (min_tokens_to_keep = 1): tokens
    outside the smallest set whose probability reaches top_p get -inf."""
    if top_p >= 1.0:
        return scores
    sorted_logits, sorted_idx = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - top_p)
    remove[..., -1:] = False
    remove = remove.scatter(1, sorted_idx, remove)
    return scores.masked_fill(remove, -float("inf"))


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: the tokenizer's eos and the model's generation config's."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _context_limit(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


class _Decoder:
    """One model's KV cache over a left-padded batch."""

    def __init__(self, model: Any, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.model = model
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[:, -1, :].float()
        self.next_pos = pos[:, -1] + 1

    def step(self, token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=self.next_pos[:, None],
                         past_key_values=self.cache, use_cache=True)
        self.cache, self.next_pos = out.past_key_values, self.next_pos + 1
        self.logits = out.logits[:, -1, :].float()
        return self.logits


@torch.no_grad()
def _decode_batch(after: Any, before: Any | None, tokenizer: Any, prompts: Sequence[str], groups: Sequence[int],
                  gens: Sequence[torch.Generator], alpha: float, s: SamplingSettings) -> list[list[int]]:
    """Token ids of one batch; row r belongs to prompt groups[r] and draws from gens[groups[r]]."""
    dev = _device(after)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer([prompts[g] for g in groups], return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
    limit = _context_limit(after)
    if limit is not None and ids.shape[1] + s.max_new_tokens > limit:
        raise DatablameError(
            f"a prompt of {ids.shape[1]} tokens plus max_new_tokens={s.max_new_tokens} exceeds the model's "
            f"context of {limit} tokens", "shorten the prompt or lower max_new_tokens")
    stops = torch.tensor(eos_ids(after, tokenizer), device=dev)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])
    dec_a = _Decoder(after, ids, mask)
    dec_b = _Decoder(before, ids, mask) if before is not None else None
    spans: list[tuple[int, slice]] = []  # (group, rows) in row order; rows of a group are contiguous
    for r, g in enumerate(groups):
        if spans and spans[-1][0] == g:
            spans[-1] = (g, slice(spans[-1][1].start, r + 1))
        else:
            spans.append((g, slice(r, r + 1)))
    alive = torch.ones(len(groups), dtype=torch.bool, device=dev)
    out = torch.empty(len(groups), 0, dtype=torch.long, device=dev)
    la, lb = dec_a.logits, None if dec_b is None else dec_b.logits
    for t in range(s.max_new_tokens):
        scores = la if lb is None else amplified_logits(la, lb, alpha)
        scores = top_p_filter(scores / s.temperature, s.top_p)
        probs = scores.softmax(dim=-1)
        nxt = torch.empty(len(groups), dtype=torch.long, device=dev)
        for g, rows in spans:
            nxt[rows] = torch.multinomial(probs[rows], 1, generator=gens[g]).squeeze(1)
        nxt = torch.where(alive, nxt, torch.full_like(nxt, pad))
        out = torch.cat([out, nxt[:, None]], dim=1)
        alive = alive & ~torch.isin(nxt, stops)
        if not alive.any() or t == s.max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(len(groups), 1)], dim=1)
        la = dec_a.step(nxt, mask)
        lb = None if dec_b is None else dec_b.step(nxt, mask)
    return out.tolist()


def _trim(ids: list[int], stops: set[int]) -> list[int]:
    """Tokens up to and including the first end-of-sequence token."""
    for i, t in enumerate(ids):
        if t in stops:
            return ids[: i + 1]
    return ids


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def sample_token_ids(after: Any, before: Any | None, tokenizer: Any, prompts: Sequence[str], *, alpha: float,
                     n_samples: int, seeds: Sequence[int], settings: SamplingSettings) -> list[list[list[int]]]:
    """Generated token ids [prompt][sample] (eos included when reached). `before=None` samples
    the after-model alone (plain sampling, one forward per step); with a before-model the
    logits are amplified by `alpha` (0 included: then the tokens equal plain sampling's)."""
    alpha = check_alpha(alpha)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if n_samples < 1:
        raise DatablameError(f"n_samples must be >= 1, got {n_samples}", "ask for at least one sample per prompt")
    dev = _device(after)
    if before is not None and _device(before) != dev:
        raise DatablameError(f"the before-model is on {_device(before)} and the after-model on {dev}",
                             "load both models on the same device")
    gens = [_generator(sd, dev) for sd in seeds]
    stops = set(eos_ids(after, tokenizer))
    rows: list[int] = [p for p in range(len(prompts)) for _ in range(n_samples)]  # row -> prompt
    out: list[list[list[int]]] = [[] for _ in prompts]
    bs = settings.batch_size
    for start in range(0, len(rows), bs):
        groups = rows[start:start + bs]
        for g, ids in zip(groups, _decode_batch(after, before, tokenizer, prompts, groups, gens, alpha, settings),
                          strict=True):
            out[g].append(_trim(ids, stops))
    return out


def sample_texts(pair: ModelPair, prompts: Sequence[str], *, alpha: float, n_samples: int, seeds: Sequence[int],
                 settings: SamplingSettings, plain_at_zero: bool = True) -> list[list[str]]:
    """Decoded completions [prompt][sample] of amplified sampling (special tokens skipped).
    With `plain_at_zero`, alpha = 0 samples the after-model alone (the same tokens, half the cost)."""
    before = None if plain_at_zero and check_alpha(alpha) == 0 else pair.before
    ids = sample_token_ids(pair.after, before, pair.tokenizer, prompts, alpha=alpha, n_samples=n_samples,
                           seeds=seeds, settings=settings)
    return [[pair.tokenizer.decode(x, skip_special_tokens=True) for x in per] for per in ids]
