"""Multiple-choice questions in the MMLU column layout, from local files (or the HF cache).

Accepted layouts, one question per row:

- CSV with a header `question,A,B,C,D,answer` (plus an optional `subject` column), or the
  original MMLU CSV without a header (those six columns in that order; the subject is the
  file name less `_test`/`_dev`/`_val`, e.g. `abstract_algebra_test.csv`);
- JSONL/JSON objects with `question`, either `A`..`D` or `choices` (four strings), `answer`
  (a letter A-D or an index 0-3, as the HF `cais/mmlu` dataset has it) and optional `subject`.

A folder is read file by file (MMLU's `data/test`); few-shot examples come from `dev_path`
(MMLU's `data/dev`) when given.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError

LETTERS = ("A", "B", "C", "D")
_SUFFIX = re.compile(r"_(test|dev|val|validation|train)$")
_LAYOUT = ("columns question, A, B, C, D, answer (optional subject) - or question, choices, answer in JSONL - "
           "with the answer a letter A-D")
_SUFFIXES = (".csv", ".jsonl", ".json")


@dataclass(frozen=True)
class MCQuestion:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # 0..3


def _answer(value: Any, where: str) -> int:
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int) and 0 <= value < 4:
        return value
    text = str(value).strip().upper()
    if text in LETTERS:
        return LETTERS.index(text)
    raise DatablameError(f"{where}: answer {value!r} is not one of A, B, C, D",
                         "write the correct option's letter (A-D) in the answer column")


def _question(row: dict[str, Any], subject: str, where: str) -> MCQuestion:
    if "choices" in row and not all(k in row for k in LETTERS):
        choices = row["choices"]
        if not isinstance(choices, list) or len(choices) != 4:
            raise DatablameError(f"{where}: choices must be a list of four options", f"use the MMLU layout: {_LAYOUT}")
    else:
        choices = [row.get(k) for k in LETTERS]
    missing = [k for k in ("question", "answer") if row.get(k) is None]
    if missing or any(c is None for c in choices):
        found = ", ".join(sorted(str(k) for k in row)) or "none"
        raise DatablameError(f"{where}: wrong columns (found {found})", f"use the MMLU layout: {_LAYOUT}")
    subject = str(row.get("subject") or subject)
    return MCQuestion(subject, str(row["question"]), tuple(str(c) for c in choices), _answer(row["answer"], where))


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return []
    head = [c.strip() for c in rows[0]]
    if "question" in (h.lower() for h in head):
        keys = [h if h.upper() not in LETTERS else h.upper() for h in (x.lower() for x in head)]
        return [dict(zip(keys, r, strict=False)) for r in rows[1:] if any(c.strip() for c in r)]
    if len(head) != 6:
        raise DatablameError(f"MMLU file {path}: wrong columns ({len(head)} in the first row and no header)",
                             f"use the MMLU layout: {_LAYOUT}")
    keys = ["question", *LETTERS, "answer"]
    out = []
    for n, r in enumerate(rows, 1):
        if len(r) != 6:
            raise DatablameError(f"MMLU file {path} row {n}: {len(r)} columns, not 6", f"use the MMLU layout: {_LAYOUT}")
        out.append(dict(zip(keys, r, strict=True)))
    return out


def _json_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatablameError(f"MMLU file {path} is not valid JSON ({err})", f"use the MMLU layout: {_LAYOUT}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DatablameError(f"MMLU file {path} must hold question objects", f"use the MMLU layout: {_LAYOUT}")
    return rows


def read_file(path: Path) -> list[MCQuestion]:
    subject = _SUFFIX.sub("", path.stem)
    try:
        rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _json_rows(path)
    except (OSError, UnicodeDecodeError) as err:
        raise DatablameError(f"cannot read MMLU file {path} ({err})", "pass a UTF-8 CSV or JSONL file") from None
    return [_question(r, subject, f"MMLU file {path} row {n}") for n, r in enumerate(rows, 1)]


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
        if found:
            return found
        raise DatablameError(f"MMLU folder {path} holds no .csv/.jsonl/.json files",
                             "point evaluate.mmlu.path to MMLU's data/test folder or a question file")
    raise DatablameError(f"MMLU path {path} does not exist", "fix evaluate.mmlu.path (--mmlu)")


def by_subject(questions: list[MCQuestion]) -> dict[str, list[MCQuestion]]:
    out: dict[str, list[MCQuestion]] = {}
    for q in questions:
        out.setdefault(q.subject, []).append(q)
    return out


def load_local(path: str | Path) -> dict[str, list[MCQuestion]]:
    """subject -> its questions, in file order, from a file or a folder of files."""
    questions = [q for f in _files(Path(path)) for q in read_file(f)]
    if not questions:
        raise DatablameError(f"MMLU path {path} holds no questions", f"use the MMLU layout: {_LAYOUT}")
    return by_subject(questions)


def load_hf(name: str, split: str) -> dict[str, list[MCQuestion]]:
    """The HF MMLU dataset (`all` config), only from the local cache (no download)."""
    no_local = ("the MMLU dataset is not available offline", "pass local MMLU files: evaluate.mmlu.path (--mmlu) "
                "= a CSV/JSONL file or MMLU's data/test folder (columns question, A, B, C, D, answer)")
    try:
        import datasets
    except ImportError:
        raise DatablameError(*no_local) from None
    try:
        ds = datasets.load_dataset(name, "all", split=split)
    except Exception as err:  # noqa: BLE001 - offline misses surface as many exception types
        raise DatablameError(f"{no_local[0]} ({name}: {type(err).__name__})", no_local[1]) from None
    return by_subject([_question(dict(r), "", f"{name} row {n}") for n, r in enumerate(ds, 1)])


def select(data: dict[str, list[MCQuestion]], subjects: list[str], source: str) -> dict[str, list[MCQuestion]]:
    """The requested subjects (all when none are named); an unknown one is an error."""
    if not subjects:
        return dict(sorted(data.items()))
    unknown = [s for s in subjects if s not in data]
    if unknown:
        have = ", ".join(sorted(data)[:12]) + (" ..." if len(data) > 12 else "")
        raise DatablameError(f"unknown MMLU subject {unknown[0]!r}: {source} has {have}",
                             "fix evaluate.mmlu.subjects (or leave it empty for every subject)")
    return {s: data[s] for s in subjects}
