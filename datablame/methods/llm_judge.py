"""LLM judge (seed 004): a chat model rates 0-10 how likely a training row caused an output.

For each query, the judge sees the query's prompt and completion and one candidate row
(fixed rubric prompt, `RUBRIC` below) and answers with a score. Parsing (`parse_score`)
takes the first number 0-10 in the answer after removing echoes of the scale ("0-10",
"/10", "out of 10"), so "7", "Score: 7", "7/10", "**8**" and "I'd say 6 out of 10" all
parse; an answer without such a number ("I cannot tell", "", "11") is junk: no score,
counted in the report. Judgments are cached in SQLite keyed by (backend, model, sha256 of
the full prompt), so repeating a run or re-ranking more candidates costs only the new
prompts; cached junk stays junk (delete the cache file to retry).

Only a candidate set is judged (judging every row with a local model is slow): the top
`candidates` rows per query of another method of the same run (`candidates_from`, default
grad_cosine; computed once and shared), or every row with `candidates: all`.

Scores: the judge's 0-10 for judged rows, plus a tie-break of at most 0.001 that keeps the
candidate method's order among equal judge scores; -0.5 (+ tie-break) for a candidate whose
answer was junk; -1 for rows that were not candidates. Unit: judge rating, 0-10. Sign:
higher = the judge finds it more likely the row caused the output = more responsible.

Options (`attribution.options.llm_judge`): `backend` local|openai|anthropic, `model`
(default: smollm2 for local, the backend's default otherwise), `candidates` (10 or "all"),
`candidates_from` (grad_cosine), `max_new_tokens` (6), `max_chars` (per text field, 1200),
`backend_options` (passed to the backend: base_url, api_key_env, batch_size, cache_dir,
device, timeout), `cache` (SQLite path; default <work_dir>/llm_judge/cache.sqlite, in
memory without a work dir). A report (`<work_dir>/llm_judge/report.json`) lists calls,
cache hits, junk answers and every judged row's answer.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from datablame.features.context import AttributionContext
from datablame.layout import AttributionLayout
from datablame.methods.base import Method, MethodOptions, register, scores_of
from datablame.models.judge_backends import BACKENDS, JudgeBackend, make_backend
from datablame.utils.io import atomic_write_json

log = logging.getLogger("datablame")

SYSTEM = "You are an expert in training-data attribution for language models. You answer with one integer from 0 to 10."
RUBRIC = """A language model was trained on many examples. Afterwards, given the prompt below, it produced the output below.

Prompt: {prompt}
Output: {completion}

One of its training examples:
{row}

How likely is it that training on this example caused the model to produce this output?
0 = unrelated: another topic, nothing of the output's content.
3 = same topic or names, but it does not contain the output's specific claim or answer.
6 = contains part of the output's content or a closely related fact.
10 = states the output's specific claim or answer; training on it directly teaches this output.
Reply with only the score, an integer from 0 to 10."""

JUNK_SCORE = -0.5
NOT_JUDGED_SCORE = -1.0
TIE_BREAK = 1e-3

_SCALE_ECHO = re.compile(r"\b0\s*(?:-|–|—|to)\s*10\b|(?:/|\bout\s+of\b)\s*10(?:\.0+)?\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


def parse_score(answer: str | None) -> float | None:
    """The first number in [0, 10] of a judge's answer, or None for junk (see module doc)."""
    if not answer:
        return None
    text = _SCALE_ECHO.sub(" ", answer)
    m = _NUMBER.search(text)
    if m is None:
        # "10/10" lost its number with the echo: fall back to the raw answer's first number
        m = _NUMBER.search(answer)
        if m is None:
            return None
    value = float(m.group(0))
    return value if 0.0 <= value <= 10.0 else None


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def judge_prompt(query_prompt: str, completion: str, row_text: str, max_chars: int = 1200) -> tuple[str, str]:
    """(system, user) of the fixed rubric for one (query, row)."""
    return SYSTEM, RUBRIC.format(
        prompt=_clip(query_prompt.strip(), max_chars), completion=_clip(completion.strip(), max_chars),
        row=_clip(row_text.strip(), max_chars),
    )


class JudgmentCache:
    """SQLite table of judgments keyed by (backend, model, sha256 of the prompt)."""

    def __init__(self, path: str | Path | None) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path) if path is not None else ":memory:"
        self.db = sqlite3.connect(self.path)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS judgments (backend TEXT, model TEXT, prompt_sha TEXT, answer TEXT, "
            "score REAL, PRIMARY KEY (backend, model, prompt_sha))"
        )
        self.db.commit()

    @staticmethod
    def key(prompt: tuple[str, str]) -> str:
        return hashlib.sha256("\x00".join(prompt).encode("utf-8")).hexdigest()

    def get(self, backend: str, model: str, sha: str) -> tuple[str, float | None] | None:
        row = self.db.execute(
            "SELECT answer, score FROM judgments WHERE backend=? AND model=? AND prompt_sha=?", (backend, model, sha)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def put(self, backend: str, model: str, sha: str, answer: str, score: float | None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?)", (backend, model, sha, answer, score)
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def judge_pairs(
    backend: JudgeBackend, cache: JudgmentCache, prompts: Sequence[tuple[str, str]], *, max_new_tokens: int,
    chunk: int = 8, desc: str | bool = "LLM judge",
) -> tuple[list[str], list[float | None], dict[str, int]]:
    """Answers and scores for `prompts`, from the cache where possible; counts of calls."""
    shas = [cache.key(p) for p in prompts]
    answers: list[str | None] = [None] * len(prompts)
    scores: list[float | None] = [None] * len(prompts)
    todo = []
    for i, sha in enumerate(shas):
        hit = cache.get(backend.name, backend.model, sha)
        if hit is None:
            todo.append(i)
        else:
            answers[i], scores[i] = hit
    bar = tqdm(total=len(todo), desc=desc or "", disable=not desc or len(todo) < 4, leave=False)
    for s in range(0, len(todo), chunk):
        part = todo[s : s + chunk]
        got = backend.generate([prompts[i] for i in part], max_new_tokens)
        if len(got) != len(part):
            raise RuntimeError(f"judge backend returned {len(got)} answers for {len(part)} prompts")
        for i, answer in zip(part, got, strict=True):
            answers[i], scores[i] = answer, parse_score(answer)
            cache.put(backend.name, backend.model, shas[i], answer, scores[i])
        bar.update(len(part))
    bar.close()
    stats = {
        "prompts": len(prompts), "backend_calls": len(todo), "cache_hits": len(prompts) - len(todo),
        "junk": sum(s is None for s in scores),
    }
    return [a or "" for a in answers], scores, stats


@register
class LLMJudge(Method):
    name = "llm_judge"
    family = "judge"
    unit = "judge rating 0-10 (ties broken by the candidate method, < 0.001); -0.5 junk answer, -1 not judged"
    cost = "one chat-model generation per (query, candidate row); cached"

    class Options(MethodOptions):
        backend: str = Field("local", description="judge backend: local, openai or anthropic")
        model: str | None = Field(None, description="chat model (null = the backend's default)")
        candidates: Annotated[int, Field(ge=1)] | Literal["all"] = Field(10, description="top-N rows of "
                                                                          "candidates_from to judge, or 'all'")
        candidates_from: str = Field("grad_cosine", description="method whose top rows are judged")
        max_new_tokens: int = Field(6, ge=1, description="tokens the judge may answer with")
        max_chars: int = Field(1200, ge=50, description="characters kept per text field of the prompt")
        backend_options: dict[str, Any] | None = Field(None, description="passed to the backend (base_url, "
                                                       "api_key_env, batch_size, cache_dir, device, timeout)")
        cache: str | None = Field(None, description="SQLite judgment cache (null = <work_dir>/llm_judge/cache.sqlite)")

        @field_validator("backend")
        @classmethod
        def _known_backend(cls, v: str) -> str:
            if v not in BACKENDS:
                raise ValueError(f"unknown judge backend {v!r}; choose one of {sorted(BACKENDS)}")
            return v

    def __init__(self, **options) -> None:
        super().__init__(**options)
        o = self.options
        self.backend_kind, self.model = o.backend, o.model
        self.backend_options = dict(o.backend_options or {})
        self.candidates, self.candidates_from = o.candidates, o.candidates_from
        self.max_new_tokens, self.max_chars = o.max_new_tokens, o.max_chars
        self.cache_path = o.cache
        self.backend: JudgeBackend = make_backend(o.backend, o.model, **self.backend_options)
        self.info: dict[str, Any] = {}

    def _candidates(self, ctx: AttributionContext) -> tuple[np.ndarray, np.ndarray]:
        """Per query, candidate row indices [Q, N] in the candidate method's order, and that
        method's scores."""
        n_rows = len(ctx.corpus)
        if self.candidates == "all":
            ref = np.zeros((len(ctx.queries), n_rows))
            return np.tile(np.arange(n_rows), (len(ctx.queries), 1)), ref
        ref = scores_of(ctx, self.candidates_from, by=self.name)
        n = min(int(self.candidates), n_rows)
        return np.argsort(-ref, axis=1, kind="stable")[:, :n], ref

    def _cache(self, ctx: AttributionContext) -> JudgmentCache:
        if self.cache_path:
            return JudgmentCache(self.cache_path)
        if ctx.work_dir is not None:
            return JudgmentCache(AttributionLayout(ctx.work_dir).cache_dir(self.name) / "cache.sqlite")
        return JudgmentCache(None)

    def score(self, ctx: AttributionContext) -> np.ndarray:
        cand, _ = self._candidates(ctx)
        n_q, n_c = cand.shape
        prompts, where = [], []
        for qi, query in enumerate(ctx.queries):
            for rank, ri in enumerate(cand[qi]):
                prompts.append(judge_prompt(query.prompt, query.completion or "", ctx.corpus[int(ri)].text, self.max_chars))
                where.append((qi, int(ri), rank))
        cache = self._cache(ctx)
        try:
            answers, judged, stats = judge_pairs(
                self.backend, cache, prompts, max_new_tokens=self.max_new_tokens,
                desc=f"LLM judge ({self.backend.name}:{self.backend.model})",
            )
        finally:
            cache.close()
        scores = np.full((n_q, len(ctx.corpus)), NOT_JUDGED_SCORE, dtype=np.float64)
        per_query: list[list[dict]] = [[] for _ in range(n_q)]
        for (qi, ri, rank), answer, value in zip(where, answers, judged, strict=True):
            tie = TIE_BREAK * (n_c - rank) / n_c
            scores[qi, ri] = (JUNK_SCORE if value is None else value) + tie
            per_query[qi].append({"row_id": ctx.corpus[ri].row_id, "candidate_rank": rank, "answer": answer,
                                  "score": value})
        self.info = {
            "backend": self.backend.name, "model": self.backend.model, "candidates": self.candidates,
            "candidates_from": None if self.candidates == "all" else self.candidates_from, **stats,
        }
        if stats["junk"]:
            log.warning("llm_judge: %d of %d answers had no 0-10 score (junk); see the report", stats["junk"], stats["prompts"])
        if ctx.work_dir is not None:
            atomic_write_json(AttributionLayout(ctx.work_dir).cache_dir(self.name) / "report.json", {
                **self.info, "cache": cache.path,
                "queries": [{"query_id": q.query_id, "judged": per_query[qi]} for qi, q in enumerate(ctx.queries)],
            })
        return scores
