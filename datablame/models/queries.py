"""Turn queries into encoded rows: generate missing completions, check lengths."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from datablame.data.corpus import Query
from datablame.data.queries import assign_ids
from datablame.errors import DatablameError
from datablame.models.tokenize import Encoded, encode_pairs


def context_limit(model, max_length: int) -> int:
    pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(max_length, pos) if pos else max_length


@torch.no_grad()
def generate_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy completions (deterministic), decoded without special tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for p in prompts:  # one by one: left padding would change positions in tiny models
        ids = tokenizer(p, return_tensors="pt").to(device)
        gen = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        outs.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    model.train(was_training)
    return outs


def prepare_queries(
    model, tokenizer, queries: Sequence[Query], *, max_length: int, max_new_tokens: int, loss_on: str = "completion"
) -> tuple[list[Query], Encoded]:
    """Fill in missing completions by greedy generation and encode with the training mask."""
    if not queries:
        raise DatablameError("no queries to attribute", "add attribution.queries or attribution.queries_file")
    limit = context_limit(model, max_length)
    for i, q in enumerate(queries):
        n = len(tokenizer(q.prompt)["input_ids"])
        budget = n + (max_new_tokens if q.completion is None else 0)
        if budget > limit:
            raise DatablameError(
                f"query {q.query_id or i} prompt is {n} tokens"
                + (f" (+{max_new_tokens} to generate)" if q.completion is None else "")
                + f", longer than the context of {limit} tokens",
                "shorten the query, or raise model.max_length (up to the model's maximum)",
            )
    todo = [i for i, q in enumerate(queries) if q.completion is None]
    done = list(queries)
    if todo:
        gens = generate_completions(model, tokenizer, [queries[i].prompt for i in todo], max_new_tokens)
        for i, g in zip(todo, gens, strict=True):
            done[i] = queries[i].with_completion(g)
    done = assign_ids(done)  # q<position> for queries without an id, never one already taken
    enc = encode_pairs(
        tokenizer, [q.prompt for q in done], [q.completion or "" for q in done],
        max_length=10**9, loss_on=loss_on, add_eos=False,
    )
    for i, ids in enumerate(enc.input_ids):
        if len(ids) > limit:
            raise DatablameError(
                f"query {done[i].query_id} is {len(ids)} tokens with its completion, longer than the context of {limit}",
                "shorten the query or its completion, or raise model.max_length",
            )
        if i in enc.no_loss:
            raise DatablameError(
                f"query {done[i].query_id} has an empty completion: nothing to attribute",
                "give a non-empty completion, or let the model generate one (omit completion)",
            )
    return done, enc
