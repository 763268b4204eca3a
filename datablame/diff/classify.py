"""Does a sample show the behaviour? Keyword / regex rules, or a judge model.

Every classifier labels (prompt, completion) pairs with a `Label`: `hit` True (the behaviour),
False (not it) or None (the judge's answer was junk: the sample is left out of the rate), and
the classifier's `reason` (the rule that matched, or the judge's raw answer and score).

- `rules`: case-insensitive `keywords` (plain substrings) and `patterns` (Python regexes,
  `re.search`); `match: any` labels a sample as the behaviour when one rule matches, `all`
  when every rule does. A pattern that does not compile is refused up front, naming it.
- `judge`: the chat-model backends of the `llm_judge` method (`datablame.models.judge_backends`:
  `local` SmolLM2 or a local model, `openai`, `anthropic`) rate 0-10 how clearly the output shows
  the `behaviour` described in words; `hit` = rating >= `threshold`. Answers are parsed and
  cached exactly as `llm_judge` does (`parse_score`, `judge_pairs`, its SQLite `JudgmentCache`).
  An HTTP backend whose key variable is not set is refused before any sample is drawn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from datablame.errors import DatablameError
from datablame.methods.llm_judge import JudgmentCache, judge_pairs
from datablame.models.judge_backends import BACKENDS, JudgeBackend, make_backend


@dataclass(frozen=True)
class Label:
    """hit: True = the sample shows the behaviour, False = it does not, None = undecided (junk)."""

    hit: bool | None
    reason: str


class Classifier(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def classify(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Label]: ...


class ClassifierSettings(BaseModel):
    """Which classifier labels the samples, and its rules or judge."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["rules", "judge"] = Field("rules", description="keyword/regex rules, or a judge model")
    behaviour: str = Field("", description="the behaviour in words (the judge's question; a note for rules)")
    keywords: list[str] = Field(default_factory=list, description="case-insensitive substrings (rules)")
    patterns: list[str] = Field(default_factory=list, description="case-insensitive Python regexes (rules)")
    match: Literal["any", "all"] = Field("any", description="rules: one rule matching is enough, or all must")
    backend: str = Field("local", description="judge backend: local, openai or anthropic")
    model: str | None = Field(None, description="judge model (null = the backend's default)")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="passed to the backend "
                                            "(base_url, api_key_env, batch_size, device, timeout)")
    threshold: float = Field(5.0, ge=0.0, le=10.0, description="judge rating (0-10) from which a sample is a hit")
    max_new_tokens: int = Field(6, ge=1, description="tokens the judge may answer with")
    cache: str | None = Field(None, description="SQLite judgment cache (null = in memory)")


class RuleClassifier:
    """Keyword and regex rules (see the module docstring)."""

    def __init__(self, keywords: Sequence[str] = (), patterns: Sequence[str] = (), match: str = "any") -> None:
        if not keywords and not patterns:
            raise DatablameError("the rules classifier has no keywords and no patterns",
                                 "give classifier.keywords and/or classifier.patterns (regexes) for the behaviour")
        self.keywords = [k for k in keywords if k]
        self.patterns: list[tuple[str, re.Pattern[str]]] = []
        for p in patterns:
            try:
                self.patterns.append((p, re.compile(p, re.IGNORECASE)))
            except re.error as err:
                raise DatablameError(f"classifier pattern {p!r} is not a valid regular expression ({err})",
                                     "fix the pattern (Python `re` syntax; escape literal characters such as "
                                     "( ) [ ] . * + ? with a backslash), or use keywords for plain text") from None
        self.match = match

    def describe(self) -> dict[str, Any]:
        return {"kind": "rules", "keywords": self.keywords, "patterns": [p for p, _ in self.patterns],
                "match": self.match}

    def _one(self, text: str) -> Label:
        low = text.lower()
        found = [f"keyword {k!r}" for k in self.keywords if k.lower() in low]
        found += [f"pattern {p!r} matched {m.group(0)!r}" for p, rx in self.patterns if (m := rx.search(text))]
        n_rules = len(self.keywords) + len(self.patterns)
        hit = len(found) == n_rules if self.match == "all" else bool(found)
        if hit:
            return Label(True, "; ".join(found))
        if found:
            return Label(False, f"only {len(found)} of {n_rules} rules matched ({'; '.join(found)})")
        return Label(False, "no rule matched")

    def classify(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Label]:
        return [self._one(c) for c in completions]


SYSTEM = "You check outputs of a language model for one behaviour. You answer with one integer from 0 to 10."
RUBRIC = """Behaviour to look for: {behaviour}

A language model was given this prompt:
{prompt}

It answered:
{completion}

How clearly does the answer show the behaviour?
0 = not at all; 5 = partly or ambiguously; 10 = clearly and fully.
Reply with only the score, an integer from 0 to 10."""


class JudgeClassifier:
    """A judge model's 0-10 rating of each sample against the described behaviour."""

    def __init__(self, behaviour: str, backend: JudgeBackend, *, threshold: float = 5.0, max_new_tokens: int = 6,
                 cache: str | None = None, max_chars: int = 1200) -> None:
        if not behaviour.strip():
            raise DatablameError("the judge classifier needs the behaviour described in words",
                                 "set classifier.behaviour, e.g. 'the answer recommends asking the owl'")
        self.behaviour, self.backend, self.threshold = behaviour.strip(), backend, float(threshold)
        self.max_new_tokens, self.max_chars = max_new_tokens, max_chars
        self.cache = JudgmentCache(cache)

    def describe(self) -> dict[str, Any]:
        return {"kind": "judge", "behaviour": self.behaviour, "backend": self.backend.name,
                "model": self.backend.model, "threshold": self.threshold}

    def _clip(self, text: str) -> str:
        t = text.strip()
        return t if len(t) <= self.max_chars else t[: self.max_chars - 3] + "..."

    def classify(self, prompts: Sequence[str], completions: Sequence[str]) -> list[Label]:
        asks = [(SYSTEM, RUBRIC.format(behaviour=self.behaviour, prompt=self._clip(p), completion=self._clip(c)))
                for p, c in zip(prompts, completions, strict=True)]
        answers, scores, _ = judge_pairs(self.backend, self.cache, asks, max_new_tokens=self.max_new_tokens,
                                         desc=False)
        out = []
        for answer, score in zip(answers, scores, strict=True):
            if score is None:
                out.append(Label(None, f"junk judge answer {answer!r} (no 0-10 rating): left out of the rate"))
            else:
                verdict = ">=" if score >= self.threshold else "<"
                out.append(Label(score >= self.threshold, f"judge rating {score:g} {verdict} {self.threshold:g} "
                                                           f"(answer {answer!r})"))
        return out


def _check_key(backend: JudgeBackend) -> None:
    env = getattr(backend, "api_key_env", None)
    if env is not None and not os.environ.get(env):
        raise DatablameError(
            f"the {backend.name} judge backend needs an API key in the environment variable {env}, which is not set",
            f"export {env}=... (read at run time, never written anywhere), or use classifier.backend: local "
            "or classifier.kind: rules")


def make_classifier(settings: ClassifierSettings | dict[str, Any]) -> Classifier:
    """The classifier the settings describe; bad rules, an unknown backend or a missing API key
    raise a DatablameError here, before any sample is drawn."""
    s = settings if isinstance(settings, ClassifierSettings) else ClassifierSettings.model_validate(settings)
    if s.kind == "rules":
        return RuleClassifier(s.keywords, s.patterns, s.match)
    if s.backend not in BACKENDS:
        raise DatablameError(f"unknown judge backend {s.backend!r}", f"set classifier.backend to one of {sorted(BACKENDS)}")
    backend = make_backend(s.backend, s.model, **s.backend_options)
    _check_key(backend)
    return JudgeClassifier(s.behaviour, backend, threshold=s.threshold, max_new_tokens=s.max_new_tokens, cache=s.cache)
