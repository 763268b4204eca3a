"""`build_corpus(cfg)`: load -> check columns -> render with the template -> clean -> ids.

Row ids are stable across runs: the `data.id_column` value when set (duplicates are an
error), otherwise ``"r-" + sha256(prompt + "\\x00" + completion)[:12]`` of the cleaned row.
An id cell must be a string or an integer (written in decimal: 7 -> "7").

Text columns (the template's input/output/instruction/text columns) must hold strings: a
number, bool, list, object or bytes value is an error naming the column, how many rows hold
one and the first of them -- it is never turned into its Python repr. CSV cells are always
text. A null (None/NaN) cell counts as empty: with `data.cleaning.drop_empty` its row is
dropped, and the number of such rows per column is logged as a warning.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from datablame.config import DataConfig
from datablame.data.clean import CleanExample, clean_examples
from datablame.data.corpus import Corpus, Row
from datablame.data.loaders import load_records
from datablame.data.templates import REQUIRED_FIELDS, TEMPLATE_FIELDS, as_text
from datablame.errors import DatablameError

log = logging.getLogger("datablame")


def content_id(prompt: str, completion: str) -> str:
    """The default row id: a hash of the rendered row."""
    digest = hashlib.sha256((prompt + "\x00" + completion).encode("utf-8")).hexdigest()
    return "r-" + digest[:12]


def template_columns(cfg: DataConfig) -> dict[str, tuple[str, str]]:
    """Template field -> (config key, column name) for `cfg.template`."""
    keys = {
        "input": ("data.input_column", cfg.input_column),
        "output": ("data.output_column", cfg.output_column),
        "instruction": ("data.instruction_column", cfg.instruction_column),
        "text": ("data.text_column", cfg.text_column),
    }
    if cfg.template == "instruction" and not cfg.instruction_column:
        raise DatablameError(
            "data.template is 'instruction' but data.instruction_column is not set.",
            "set data.instruction_column to the column holding the instruction",
        )
    return {f: keys[f] for f in TEMPLATE_FIELDS[cfg.template]}  # type: ignore[misc]


def _unknown_column(key: str, column: str, columns: list[str], where: str) -> DatablameError:
    return DatablameError(
        f"column {column!r} (from {key}) is not in {where}; available columns: {columns}.",
        f"set {key} to one of {columns}",
    )


def check_columns(cfg: DataConfig, columns: list[str], where: str = "the data") -> None:
    """Every configured column (template, id, metadata) must exist."""
    for key, col in template_columns(cfg).values():
        if col not in columns:
            raise _unknown_column(key, col, columns, where)
    if cfg.id_column and cfg.id_column not in columns:
        raise _unknown_column("data.id_column", cfg.id_column, columns, where)
    for col in cfg.metadata_columns:
        if col not in columns:
            raise _unknown_column("data.metadata_columns", col, columns, where)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", tuple: "list", bool: "bool", int: "number", float: "number",
            bytes: "bytes"}.get(type(value), type(value).__name__)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None or NaN


def check_text_columns(records: list[dict[str, Any]], cfg: DataConfig, where: str) -> None:
    """Refuse non-text cells in the template's columns; warn about null/empty required cells."""
    required = REQUIRED_FIELDS[cfg.template]
    for field, (key, col) in template_columns(cfg).items():
        bad = [(i, rec.get(col)) for i, rec in enumerate(records)
               if not _is_null(rec.get(col)) and not isinstance(rec.get(col), str)]
        if bad:
            i, value = bad[0]
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            kinds = sorted({_type_name(v) for _, v in bad})
            raise DatablameError(
                f"column {col!r} ({key}) of {where} must hold text, but {len(bad)} of {len(records)} rows hold "
                f"{'/'.join(kinds)} values; the first is row {i + 1} (counting from 1): {_type_name(value)} {shown}.",
                f"convert column {col!r} to strings before loading (e.g. pandas `df[{col!r}] = "
                f"df[{col!r}].astype(str)`, or json.dumps for nested values), or set {key} to a text column",
            )
        if field in required:
            empty = sum(1 for rec in records if not as_text(rec.get(col)).strip())
            if empty:
                what = "dropped (data.cleaning.drop_empty)" if cfg.cleaning.drop_empty else "kept (drop_empty is off)"
                log.warning("%d of %d rows of %s have a null or empty %r (%s): %s", empty, len(records), where,
                            col, key, what)


def _id_text(value: Any, column: str, row: int) -> str:
    """An id cell as text: strings as they are (stripped), integers in decimal, null as ""."""
    if _is_null(value):
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DatablameError(
        f"row {row + 1} (counting from 1) has a {_type_name(value)} id {value!r} in column {column!r} "
        "(data.id_column); ids must be strings or integers.",
        f"convert column {column!r} to strings or integers, or set data.id_column: null to use content hashes",
    )


def _assign_ids(kept: list[CleanExample], records: list[dict[str, Any]], cfg: DataConfig) -> list[str]:
    if cfg.id_column:
        ids = [_id_text(records[ex.index].get(cfg.id_column), cfg.id_column, ex.index) for ex in kept]
        first: dict[str, int] = {}
        for ex, rid in zip(kept, ids, strict=True):
            if not rid:
                raise DatablameError(
                    f"record {ex.index} has an empty {cfg.id_column!r} (data.id_column).",
                    "give every row an id, or set data.id_column: null to use content hashes",
                )
            if rid in first:
                raise DatablameError(
                    f"id {rid!r} in column {cfg.id_column!r} (data.id_column) is used by records "
                    f"{first[rid]} and {ex.index}; row ids must be unique.",
                    "make the id column unique, or set data.id_column: null to use content hashes",
                )
            first[rid] = ex.index
        return ids
    ids, counts = [], {}
    for ex in kept:  # exact duplicates only survive with drop_duplicates off: suffix them
        rid = content_id(ex.prompt, ex.completion)
        n = counts.get(rid, 0)
        counts[rid] = n + 1
        ids.append(rid if n == 0 else f"{rid}-{n}")
    return ids


def build_corpus(cfg: DataConfig) -> Corpus:
    """The cleaned, rendered corpus described by `cfg` (report in `Corpus.report`)."""
    if cfg.source == "planted":
        from datablame.data.synthetic import make_planted

        return make_planted(cfg.planted).corpus
    records, columns = load_records(cfg)
    where = str(cfg.path)
    check_columns(cfg, columns, where)
    check_text_columns(records, cfg, where)
    colmap = template_columns(cfg)
    examples = [
        {field: as_text(rec.get(col)) for field, (_, col) in colmap.items()} for rec in records
    ]
    kept, report = clean_examples(examples, cfg.template, cfg.cleaning)
    if not kept:
        cols = ", ".join(f"{k}={c!r}" for k, c in colmap.values())
        raise DatablameError(
            f"no rows left after cleaning {where}: loaded {report['loaded']}, dropped "
            f"{report['dropped_empty']} with an empty required field ({cols}) and "
            f"{report['dropped_duplicates']} exact duplicates.",
            "check that the column settings point at the text columns, or turn off "
            "data.cleaning.drop_empty",
        )
    ids = _assign_ids(kept, records, cfg)
    rows = [
        Row(rid, ex.prompt, ex.completion,
            {c: records[ex.index].get(c) for c in cfg.metadata_columns})
        for rid, ex in zip(ids, kept, strict=True)
    ]
    if cfg.num_samples is not None:
        report["dropped_num_samples"] = max(0, len(rows) - cfg.num_samples)
        rows = rows[: cfg.num_samples]
        report["kept"] = len(rows)
    name = Path(cfg.path).stem if Path(where).exists() else where
    return Corpus(rows, name=name or "corpus", report=report)
