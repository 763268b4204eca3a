"""Evaluation prompts from a JSON or JSONL file.

Each item is an object with `prompt` (required), and optionally `reference` (a string) or
`references` (a list of strings: reference metrics take the best match) and `id`. A JSON file
holds a list of such objects (or `{"prompts": [...]}`); a JSONL file holds one per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError

_FORMAT = ('each item needs a "prompt" string and may have "reference" (a string) or "references" '
           '(a list of strings) and an "id"')


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    prompt: str
    references: list[str] = field(default_factory=list)


def _items(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatablameError(f"prompts file {path} does not exist", "fix evaluate.prompts_file (--prompts)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatablameError(f"cannot read prompts file {path} ({err})", "pass a UTF-8 JSON or JSONL file") from None
    if path.suffix.lower() == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatablameError(f"prompts file {path} line {n} is not valid JSON ({err.msg})",
                                     "write one JSON object per line") from None
        return items
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatablameError(f"prompts file {path} is not valid JSON ({err})",
                             "write a JSON list of prompt objects, or use a .jsonl file") from None
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise DatablameError(f"prompts file {path} holds a {type(data).__name__}, not a list of prompts",
                             'write a JSON list of prompt objects (or {"prompts": [...]})')
    return data


def _references(item: dict, where: str) -> list[str]:
    refs = item.get("references", item.get("reference"))
    if refs is None:
        return []
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise DatablameError(f"{where}: references must be a string or a list of strings", _FORMAT)
    return [r for r in refs if r.strip()]


def load_prompts(path: str | Path) -> list[EvalPrompt]:
    """The prompts of `path` in file order; ids default to their 1-based position."""
    path = Path(path)
    out: list[EvalPrompt] = []
    seen: set[str] = set()
    for n, item in enumerate(_items(path), 1):
        where = f"prompts file {path} item {n}"
        if isinstance(item, str):
            item = {"prompt": item}
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise DatablameError(f"{where} has no \"prompt\" string", _FORMAT)
        pid = str(item.get("id", n))
        if pid in seen:
            raise DatablameError(f"{where}: id {pid!r} is used twice", "give every prompt its own id")
        seen.add(pid)
        out.append(EvalPrompt(pid, item["prompt"], _references(item, where)))
    if not out:
        raise DatablameError(f"prompts file {path} holds no prompts", _FORMAT)
    return out


def require_references(prompts: list[EvalPrompt], metric: str, path: str | Path | None) -> None:
    """Reference metrics need a reference for every prompt: name the ones without."""
    missing = [p.id for p in prompts if not p.references]
    if missing:
        raise DatablameError(
            f"{metric} compares answers with reference answers, but {len(missing)} of {len(prompts)} prompts "
            f"in {path} have none (e.g. id {missing[0]!r})",
            f'add "reference" (or "references") to every prompt, or drop {metric} from the evaluation types',
        )
