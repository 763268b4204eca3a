"""Turn queries into encoded rows: generate missing completions, check lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass
class QueryMeasure:
    """How each query's loss is measured when some query is behaviour-level: over `rows`, every
    member sequence (each query's completion, its `behaviour` completions, its `contrast`
    completions, all after the same prompt), and `weights[q, m]`: +1/n for the n positives of
    query q, -1/m for its m contrasts, 0 elsewhere. The query's loss is `weights @ member losses`
    (the mean NLL of the behaviour, minus the contrast's), and since gradients and their
    projections are linear, its gradient feature is `weights @ member features`, exactly."""

    rows: Encoded
    weights: torch.Tensor  # [Q, M] float64
    members: list[tuple[int, str, str]]  # (query index, "behaviour" | "contrast", completion text)


def behaviour_members(queries: Sequence[Query]) -> list[tuple[int, str, str, float]]:
    """(query index, "behaviour" | "contrast", completion, weight) of every member completion:
    +1/n for the n positives of a query (its completion and `behaviour`), -1/m for its m
    contrasts; [] when no query is behaviour-level. Attribution and retraining checks both
    measure a query with these weights."""
    if not any(q.is_behaviour for q in queries):
        return []
    out: list[tuple[int, str, str, float]] = []
    for qi, q in enumerate(queries):
        positives = (q.completion or "", *q.behaviour)
        out += [(qi, "behaviour", t, 1.0 / len(positives)) for t in positives]
        out += [(qi, "contrast", t, -1.0 / len(q.contrast)) for t in q.contrast]
    return out


def behaviour_measure(tokenizer, queries: Sequence[Query], *, limit: int, loss_on: str = "completion"
                      ) -> QueryMeasure | None:
    """The measure of `queries` (already prepared: completions filled in), or None when every
    query is a single completion string (then each is measured by its own loss, as always)."""
    weighted = behaviour_members(queries)
    if not weighted:
        return None
    members = [(qi, kind, text) for qi, kind, text, _ in weighted]
    enc = encode_pairs(tokenizer, [queries[qi].prompt for qi, _, _ in members], [t for _, _, t in members],
                       max_length=10**9, loss_on=loss_on, add_eos=False)
    weights = torch.zeros(len(queries), len(members), dtype=torch.float64)
    for m, (qi, kind, text, weight) in enumerate(weighted):
        q = queries[qi]
        if len(enc.input_ids[m]) > limit:
            raise DatablameError(f"query {q.query_id}: the {kind} completion {text[:40]!r} makes {len(enc.input_ids[m])} "
                                 f"tokens with the prompt, longer than the context of {limit}",
                                 "shorten it, or raise model.max_length")
        if m in enc.no_loss:
            raise DatablameError(f"query {q.query_id}: a {kind} completion has no tokens to measure",
                                 "give every behaviour / contrast completion some text")
        weights[qi, m] = weight
    return QueryMeasure(enc, weights, members)
