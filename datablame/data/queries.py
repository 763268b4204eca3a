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

A query must look like the training rows, or it ranks them much worse (recall@10 0.47 -> 0.14
on one run for a `qa` query without its `Question: ...\nAnswer:` frame). So:

- a query given as the template's fields (`input` [+ `output`], `instruction`) is cleaned and
  rendered with `data.template` exactly as the rows are (the recommended form);
- a query given as a `prompt` is taken as written; one outside the template's frame (see
  `templates.PROMPT_FRAMES`) is warned about, naming the frame and the fields form;
- under `qa`, a completion after a prompt ending in "Answer:" gets the leading space the
  template puts before every row's answer when it lacks one (warned about: it changes the text).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from datablame.config import QUERY_FIELDS, AttributionConfig, DataConfig, QueryConfig, RunConfig
from datablame.data.clean import normalize_text
from datablame.data.corpus import Query
from datablame.data.templates import (
    FRAME_TEXT,
    PROMPT_FRAMES,
    REQUIRED_FIELDS,
    TEMPLATE_FIELDS,
    in_frame,
    render,
)
from datablame.errors import DatablameError

log = logging.getLogger("datablame")
QUERY_KEYS = ("prompt", "completion", *QUERY_FIELDS, "query_id")
_LINE_FIX = ('write one {"input": "...", "output": "..." or null, "query_id": "..."} object per line '
             '(or {"prompt": "...", "completion": "..."} for text taken as written)')
_FIELDS_HINT = {"qa": '{"input": "...", "output": "..."}',
                "instruction": '{"instruction": "...", "input": "...", "output": "..."}'}
_QA = DataConfig(source="planted")  # when no data config is given: the `qa` template, default cleaning
_warned: set[str] = set()  # each warning once per process (queries are resolved before and after training)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<line>"
        if e["type"] == "missing":
            parts.append(f"no '{key}'")
        elif e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (allowed: {', '.join(QUERY_KEYS)})")
        elif e["type"] == "value_error":
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"'{key}': {msg}" if e["loc"] else msg)
        else:
            value = e.get("input")
            kind = "null" if value is None else type(value).__name__
            parts.append(f"'{key}' must be a string, not {kind} {json.dumps(value)[:40]}")
    return "; ".join(parts)


def query_template(data: DataConfig) -> str | None:
    """The template the training rows are rendered with (None: the `hops` corpus has none)."""
    if data.source == "hops":
        return None
    return "qa" if data.source == "planted" else data.template


def to_query(q: QueryConfig, where: str, data: DataConfig | None = None) -> Query:
    """A configured query as a Query: a prompt as written, or the fields rendered like the rows."""
    if q.prompt is not None:
        return Query(q.prompt, q.completion, q.query_id or "", behaviour=tuple(q.behaviour), contrast=tuple(q.contrast))
    data = data or _QA
    template = query_template(data)
    if template not in PROMPT_FRAMES:
        what = "the hops corpus" if template is None else "data.template 'plain'"
        raise DatablameError(f"{where} gives template fields, but {what} has no prompt frame to render them in",
                             "give the query as prompt [+ completion], the text exactly as the model should see it")
    given = [k for k in QUERY_FIELDS if getattr(q, k) is not None]
    unused = [k for k in given if k not in TEMPLATE_FIELDS[template]]
    fields = {k: normalize_text(getattr(q, k) or "", data.cleaning) for k in TEMPLATE_FIELDS[template]}
    blank = [k for k in REQUIRED_FIELDS[template] if (k != "output" or q.output is not None) and not fields[k].strip()]
    if unused or blank:
        problem = (f"gives {', '.join(unused)}, which data.template {template!r} does not use" if unused
                   else f"has no {' or '.join(blank)} (after cleaning)")
        raise DatablameError(f"{where} {problem}", f"write it as {_FIELDS_HINT[template]} (output may be left out)")
    prompt, completion = render(template, fields)

    def rendered(output: str) -> str:  # another output of the same prompt, rendered like the rows' answers
        return render(template, {**fields, "output": normalize_text(output, data.cleaning)})[1]

    return Query(prompt, completion if q.output is not None else None, q.query_id or "",
                 behaviour=tuple(map(rendered, q.behaviour)), contrast=tuple(map(rendered, q.contrast)))


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)


def _places(wheres: Sequence[str]) -> str:
    return ", ".join(wheres[:3]) + (f" and {len(wheres) - 3} more" if len(wheres) > 3 else "")


def _spaced(text: str | None) -> str | None:
    return text if not text or text[0].isspace() else " " + text


def match_template(queries: Sequence[tuple[Query, str]], data: DataConfig | None = None) -> list[tuple[Query, str]]:
    """Warn about prompts outside the training template's frame; under `qa`, give a completion
    after "...Answer:" the leading space every row's answer has (with a warning)."""
    template = query_template(data or _QA)
    if template not in PROMPT_FRAMES:
        return list(queries)
    out, off, spaced = [], [], []
    for q, where in queries:
        if not in_frame(template, q.prompt):
            off.append(where)
        elif template == "qa" and q.prompt.endswith(":"):
            texts = [t for t in (q.completion, *q.behaviour, *q.contrast) if t]
            if any(not t[0].isspace() for t in texts):
                q = dataclasses.replace(q, completion=_spaced(q.completion), behaviour=tuple(map(_spaced, q.behaviour)),
                                        contrast=tuple(map(_spaced, q.contrast)), metadata=dict(q.metadata))
                spaced.append(where)
        out.append((q, where))
    if off:
        _warn_once(
            f"{len(off)} quer{'y does' if len(off) == 1 else 'ies do'} not follow the training template {template!r} "
            f"({FRAME_TEXT[template]}): {_places(off)}. A query that does not look like the training rows ranks "
            f"them much worse. Give it as {_FIELDS_HINT[template]} to have it rendered like the rows, "
            "or write its prompt in that frame.")
    if spaced:
        _warn_once(
            f"added the leading space the 'qa' template puts before every answer to the completion of {_places(spaced)} "
            '(the rows read "Answer: <output>"). Write the completion with its leading space, or give the query '
            f"as {_FIELDS_HINT['qa']}, to silence this.")
    return out


def read_queries_file(path: str | Path, data: DataConfig | None = None) -> list[tuple[Query, str]]:
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
        out.append((to_query(q, f"{path} line {n}", data), f"{path} line {n}"))
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


def config_queries(a: AttributionConfig, data: DataConfig | None = None) -> list[Query]:
    """`attribution.queries` then the queries file, checked and matched to the training
    template of `data` (default: `qa`); the list may be empty."""
    qs = [(to_query(q, f"attribution.queries[{i}]", data), f"attribution.queries[{i}]")
          for i, q in enumerate(a.queries)]
    if a.queries_file:
        qs += read_queries_file(a.queries_file, data)
    check_unique_ids(qs)
    return [q for q, _ in match_template(qs, data)]


def resolve_queries(cfg: RunConfig, builtin: Sequence[Query] = ()) -> list[Query]:
    """The run's queries: the configured ones, else the corpus' built-in ones; never none."""
    qs = config_queries(cfg.attribution, cfg.data) or list(builtin)
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
            q = dataclasses.replace(q, query_id=qid)
        out.append(q)
    return out
