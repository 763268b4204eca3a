"""Logit evaluation (seed 002): does the trained model actually have the behaviour we ask
it to explain?

Each benchmark query carries `metadata["candidates"]`: completions that compete with its
own (hops: " c" for every base constant; planted facts: the answer sentence with every
planted answer). The model scores each candidate by its total log-probability after the
prompt (sum over the candidate's tokens, natural log); the query's own completion must rank
first -- or within `metadata["learned_max_rank"]` (poison queries: only the true claim may
outrank the false one). Queries the model gets wrong are reported separately by the bench:
attributing a behaviour the model does not have is meaningless.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from datablame.data.corpus import Query
from datablame.models.tokenize import IGNORE, encode_pairs, pad_batch


@torch.no_grad()
def candidate_logprobs(model: Any, tokenizer: Any, prompt: str, candidates: list[str], *, max_length: int,
                       batch_size: int = 64) -> list[float]:
    """Total log-probability (nats) of each candidate completion after `prompt`."""
    enc = encode_pairs(tokenizer, [prompt] * len(candidates), candidates, max_length=max_length,
                       loss_on="completion", add_eos=False)
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(candidates), batch_size):
        b = pad_batch(enc.input_ids[start:start + batch_size], enc.labels[start:start + batch_size],
                      tokenizer.pad_token_id or 0)
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        labels = b["labels"][:, 1:].to(device)
        mask = labels != IGNORE
        tok = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * mask
        out.extend(tok.sum(dim=1).tolist())
    return out


def logit_evaluation(model: Any, tokenizer: Any, queries: list[Query], *, max_length: int) -> dict[str, Any]:
    """Per query: the rank of its completion among its candidates; accuracy overall and per
    group (`metadata["group"]`, e.g. hops depth). Queries without candidates count as learned."""
    was_training = model.training
    model.eval()
    per_query = []
    for q in queries:
        cands = list(q.metadata.get("candidates") or [])
        if not cands or q.completion is None:
            per_query.append({"query_id": q.query_id, "group": q.metadata.get("group", "all"), "rank": None,
                              "n_candidates": 0, "learned": True, "margin": None})
            continue
        if q.completion not in cands:
            cands = [q.completion, *cands]
        lps = candidate_logprobs(model, tokenizer, q.prompt, cands, max_length=max_length)
        own = lps[cands.index(q.completion)]
        rank = 1 + sum(lp > own for lp in lps)
        max_rank = int(q.metadata.get("learned_max_rank", 1))
        best_other = max((lp for c, lp in zip(cands, lps, strict=True) if c != q.completion), default=own)
        per_query.append({
            "query_id": q.query_id, "group": q.metadata.get("group", "all"), "rank": rank,
            "n_candidates": len(cands), "max_rank": max_rank, "learned": rank <= max_rank,
            "margin": own - best_other,  # nats by which the own completion beats the best other one
            "predicted": cands[max(range(len(lps)), key=lps.__getitem__)],
        })
    model.train(was_training)
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in per_query:
        groups[r["group"]].append(r["learned"])
    n = len(per_query)
    return {
        "accuracy": sum(r["learned"] for r in per_query) / n if n else float("nan"),
        "n": n,
        "by_group": {g: {"accuracy": sum(v) / len(v), "n": len(v)} for g, v in sorted(groups.items())},
        "chance": {g: _chance(per_query, g) for g in sorted(groups)},
        "per_query": per_query,
    }


def _chance(per_query: list[dict], group: str) -> float | None:
    """Accuracy of a uniformly random ranking (learned_max_rank / n_candidates), averaged."""
    vals = [min(1.0, r["max_rank"] / r["n_candidates"]) for r in per_query
            if r["group"] == group and r["n_candidates"]]
    return sum(vals) / len(vals) if vals else None
