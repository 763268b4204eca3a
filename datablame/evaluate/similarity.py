"""Semantic similarity of each answer to its references: the cosine of MiniLM sentence
embeddings (datablame.models.embedder), the best over several references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datablame.evaluate.settings import BootstrapSettings, SimilaritySettings
from datablame.evaluate.stats import summarize
from datablame.models.embedder import embed


def similarity_scores(answers: Sequence[str], references: Sequence[Sequence[str]], model: str,
                      device: str | None = None) -> list[float]:
    """max over an answer's references of cos(embedding(answer), embedding(reference))."""
    flat = [r for refs in references for r in refs]
    a = embed(list(answers), model=model, device=device)
    r = embed(flat, model=model, device=device)
    out, start = [], 0
    for i, refs in enumerate(references):
        sims = r[start : start + len(refs)] @ a[i]  # unit vectors: inner product = cosine
        out.append(float(np.max(sims)) if len(refs) else float("nan"))
        start += len(refs)
    return out


def similarity_all(completions: dict[str, list[str]], references: Sequence[Sequence[str]],
                   settings: SimilaritySettings, boot: BootstrapSettings, device: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": settings.model, "models": {}}
    for name, answers in completions.items():
        per = similarity_scores(answers, references, settings.model, device)
        out["models"][name] = {"per_answer": {"cosine": per}, "summary": {"cosine": summarize(per, boot)}}
    return out
