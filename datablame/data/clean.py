"""Cleaning: normalise text, drop empty rows and exact duplicates.

Cleaning works on the template *fields* (question, answer, ...) before rendering, so the
template's own whitespace is never touched; duplicates are judged on the rendered
prompt + completion. Every step is governed by a `CleaningConfig` flag.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from datablame.config import CleaningConfig
from datablame.data.templates import REQUIRED_FIELDS, render

_HSPACE = re.compile(r"[^\S\n]+")  # any whitespace except a newline
_MANY_NEWLINES = re.compile(r"\n{3,}")


class CleanExample(NamedTuple):
    """A row that survived cleaning; `index` is its position in the loaded records."""

    index: int
    prompt: str
    completion: str
    fields: dict[str, str]


def normalize_text(text: str, cfg: CleaningConfig) -> str:
    """NFKC (if enabled) and whitespace collapse (if enabled).

    Collapsing strips the text and every line, turns runs of spaces/tabs into one space,
    makes line ends `\\n` and keeps at most one blank line between paragraphs.
    """
    if cfg.normalize_unicode:
        text = unicodedata.normalize("NFKC", text)
    if cfg.collapse_whitespace:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = "\n".join(_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
        text = _MANY_NEWLINES.sub("\n\n", text).strip()
    return text


def empty_report(loaded: int = 0) -> dict[str, int]:
    return {"loaded": loaded, "dropped_empty": 0, "dropped_duplicates": 0, "kept": loaded}


def clean_examples(
    examples: Sequence[Mapping[str, str]], template: str, cfg: CleaningConfig
) -> tuple[list[CleanExample], dict[str, int]]:
    """Normalise each example's fields, render them, drop empties and exact duplicates.

    Returns the surviving examples (first occurrence of a duplicate is kept) and the report
    ``{"loaded", "dropped_empty", "dropped_duplicates", "kept"}``.
    """
    required = REQUIRED_FIELDS[template]
    report = empty_report(len(examples))
    seen: set[tuple[str, str]] = set()
    kept: list[CleanExample] = []
    for i, raw in enumerate(examples):
        fields = {k: normalize_text(v, cfg) for k, v in raw.items()}
        if cfg.drop_empty and any(not fields.get(k, "").strip() for k in required):
            report["dropped_empty"] += 1
            continue
        prompt, completion = render(template, fields)
        if cfg.drop_duplicates:
            key = (prompt, completion)
            if key in seen:
                report["dropped_duplicates"] += 1
                continue
            seen.add(key)
        kept.append(CleanExample(i, prompt, completion, fields))
    report["kept"] = len(kept)
    return kept, report
