"""The core data contracts: a training row, a corpus of rows, and a query.

A `Row` is already rendered into the `prompt` / `completion` pair the model is trained on.
Training and attribution both use `Row.text` (prompt + completion) with the loss taken on
the completion tokens only (unless configured otherwise), so the template can never differ
between the two -- a mismatch would silently ruin the scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from datablame.utils.io import sha256_strings


@dataclass(frozen=True)
class Row:
    """One training row. `row_id` is stable across runs (given, or a hash of the content)."""

    row_id: str
    prompt: str
    completion: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    def to_dict(self) -> dict[str, Any]:
        return {
            "row_id": self.row_id,
            "prompt": self.prompt,
            "completion": self.completion,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class Query:
    """A behaviour to explain: a prompt and the completion the model gave (or will give).

    `completion=None` means "generate it with the model" (greedy decoding).

    A behaviour-level query also lists `behaviour`: more completions of the same prompt that
    express the same behaviour (paraphrases, or sampled outputs a classifier put in it), and
    optionally `contrast`: completions it is measured against (e.g. the claim's negation). Its
    measurement is then the mean loss of `completion` and `behaviour`, minus the mean loss of
    `contrast` (see `datablame.models.queries.QueryMeasure`).
    """

    prompt: str
    completion: str | None = None
    query_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    behaviour: tuple[str, ...] = ()
    contrast: tuple[str, ...] = ()

    def with_completion(self, completion: str) -> Query:
        return dataclasses.replace(self, completion=completion, metadata=dict(self.metadata))

    @property
    def is_behaviour(self) -> bool:
        """Measured over a set of completions rather than its one completion string."""
        return bool(self.behaviour or self.contrast)


@dataclass
class Corpus:
    """An ordered collection of rows with stable ids and a content fingerprint."""

    rows: list[Row]
    name: str = "corpus"
    report: dict[str, Any] = field(default_factory=dict)  # cleaning / loading statistics

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]

    @property
    def row_ids(self) -> list[str]:
        return [r.row_id for r in self.rows]

    def index_of(self) -> dict[str, int]:
        return {r.row_id: i for i, r in enumerate(self.rows)}

    def fingerprint(self) -> str:
        """Changes when any row's id, prompt or completion changes, or rows are reordered."""
        return sha256_strings(
            s for r in self.rows for s in (r.row_id, r.prompt, r.completion)
        )

    def subset(self, indices: Sequence[int], name: str | None = None) -> Corpus:
        return Corpus([self.rows[i] for i in indices], name=name or f"{self.name}[subset]")
