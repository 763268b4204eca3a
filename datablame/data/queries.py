"""The queries of a run: `attribution.queries` plus the lines of `attribution.queries_file`.

Every query is checked before any model is loaded, so a bad query costs nothing:

- the queries file is UTF-8 JSON Lines, one object per line (blank lines skipped), with the
  keys of `attribution.queries` items: `prompt` (a non-empty string), `completion` (a
  non-empty string, or null/absent: the model generates it) and `query_id` (a string, or
  null/absent); any other key, or a value of another type, is an error naming the line;
- explicit query ids are unique across the config and the file (queries without one are
  named `q<position>` later, skipping ids already taken);
- a run on a file or HF corpus needs at least one query (the synthetic corpora `planted`
  and `hops` bring their own), and a queries file that is named must hold one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from datablame.config import AttributionConfig, QueryConfig, RunConfig
from datablame.data.corpus import Query
from datablame.errors import DatablameError

QUERY_KEYS = ("prompt", "completion", "query_id")
_LINE_FIX = 'write one {"prompt": "...", "completion": "..." or null, "query_id": "..."} object per line'


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<line>"
        if e["type"] == "missing":
            parts.append(f"no '{key}'")
        elif e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (allowed: {', '.join(QUERY_KEYS)})")
        elif e["type"] == "value_error":
            parts.append(f"'{key}': {e['msg'].removeprefix('Value error, ')}")
        else:
            value = e.get("input")
            kind = "null" if value is None else type(value).__name__
            parts.append(f"'{key}' must be a string, not {kind} {json.dumps(value)[:40]}")
    return "; ".join(parts)


def read_queries_file(path: str | Path) -> list[tuple[Query, str]]:
    """The queries of a JSONL file, each with where it came from ("FILE line N")."""
    path = Path(path)
    if not path.is_file():
        raise DatablameError(f"queries file {path} does not exist", "fix attribution.queries_file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatablameError(f"cannot read queries file {path}: {err.strerror}",
                             "check the file's permissions, or fix attribution.queries_file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatablameError(f"queries file {path} is not UTF-8 text (line {line}, byte {err.start})",
                             "re-save the queries file as UTF-8") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatablameError(f"line {n} of queries file {path} is not valid JSON ({err.msg}, column {err.colno})",
                                 _LINE_FIX) from None
        if not isinstance(d, dict):
            kind = "null" if d is None else type(d).__name__
            raise DatablameError(f"line {n} of queries file {path} is a JSON {kind}, not an object", _LINE_FIX)
        try:
            q = QueryConfig.model_validate(d)
        except ValidationError as err:
            raise DatablameError(f"line {n} of queries file {path}: {_describe(err)}", _LINE_FIX) from None
        out.append((Query(q.prompt, q.completion, q.query_id or ""), f"{path} line {n}"))
    if not out:
        raise DatablameError(f"queries file {path} holds no queries",
                             f"add queries to it ({_LINE_FIX}), or set attribution.queries_file: null")
    return out


def check_unique_ids(queries: Sequence[tuple[Query, str]]) -> None:
    """Explicit query ids must be unique (an empty id is assigned later)."""
    first: dict[str, str] = {}
    for q, where in queries:
        if not q.query_id:
            continue
        if q.query_id in first:
            raise DatablameError(
                f"query id {q.query_id!r} is used twice: by {first[q.query_id]} and by {where}",
                "give every query its own query_id (or leave it out to have one assigned)",
            )
        first[q.query_id] = where


def config_queries(a: AttributionConfig) -> list[Query]:
    """`attribution.queries` then the queries file, checked (the list may be empty)."""
    qs = [(Query(q.prompt, q.completion, q.query_id or ""), f"attribution.queries[{i}]")
          for i, q in enumerate(a.queries)]
    if a.queries_file:
        qs += read_queries_file(a.queries_file)
    check_unique_ids(qs)
    return [q for q, _ in qs]


def resolve_queries(cfg: RunConfig, builtin: Sequence[Query] = ()) -> list[Query]:
    """The run's queries: the configured ones, else the corpus' built-in ones; never none."""
    qs = config_queries(cfg.attribution) or list(builtin)
    if not qs:
        synthetic = cfg.data.source in ("planted", "hops")
        raise DatablameError(
            "no queries to attribute: attribution.queries is empty and no attribution.queries_file is set"
            + (f" (and this {cfg.data.source} corpus has no built-in queries)" if synthetic else ""),
            "add queries under attribution.queries, or point attribution.queries_file at a JSONL file "
            'with one {"prompt": ..., "completion": ...} object per line',
        )
    return qs


def assign_ids(queries: Sequence[Query]) -> list[Query]:
    """Name the queries without an id `q<position>` (`q<position>-<n>` if that id is taken)."""
    taken = {q.query_id for q in queries if q.query_id}
    out = []
    for i, q in enumerate(queries):
        if not q.query_id:
            qid, n = f"q{i}", 0
            while qid in taken:
                n += 1
                qid = f"q{i}-{n}"
            taken.add(qid)
            q = Query(q.prompt, q.completion, qid, q.metadata)
        out.append(q)
    return out
