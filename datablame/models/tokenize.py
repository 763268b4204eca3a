"""Tokenization with answer-only loss masks, shared by training and attribution.

Labels are -100 (ignored) on prompt tokens when `loss_on="completion"`. Which tokens
belong to the completion is decided by character offsets on the *joint* text, so BPE merges
across the prompt/completion boundary cannot shift the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: list[int] = field(default_factory=list)  # indices of rows cut at max_length
    no_loss: list[int] = field(default_factory=list)  # rows left with no loss token

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_pairs(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    max_length: int,
    loss_on: str = "completion",
    add_eos: bool = True,
) -> Encoded:
    """Tokenize prompt+completion pairs; labels cover the completion (and eos when added)."""
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
    eos = tokenizer.eos_token_id if add_eos else None
    out = Encoded([], [])
    for i, (ids, offsets) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        ids = list(ids)
        boundary = len(prompts[i])
        labels = []
        for tok, (start, end) in zip(ids, offsets, strict=True):
            special = start == end  # bos and other added tokens carry an empty span
            in_completion = end > boundary and not special
            labels.append(tok if (loss_on == "all" and not special) or in_completion else IGNORE)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
            labels.append(eos)
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            out.truncated.append(i)
        if all(lab == IGNORE for lab in labels):
            out.no_loss.append(i)
        out.input_ids.append(ids)
        out.labels.append(labels)
    return out


def pad_batch(
    input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row. With causal attention, real tokens never see the pads."""
    width = max(len(x) for x in input_ids)
    n = len(input_ids)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    lab = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(input_ids, labels, strict=True)):
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        lab[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


def per_row_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over each row's loss tokens (nats per token); 0 for rows with none."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    nll = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.clamp_min(0).reshape(-1),
        reduction="none",
    ).view_as(shift_labels)
    nll = nll * mask
    counts = mask.sum(dim=1).clamp_min(1)
    return nll.sum(dim=1) / counts
