"""`build_corpus(cfg)`: load -> check columns -> render with the template -> clean -> ids.

Row ids are stable across runs: the `data.id_column` value when set (duplicates are an
error), otherwise ``"r-" + sha256(prompt + "\\x00" + completion)[:12]`` of the cleaned row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from datablame.config import DataConfig
from datablame.data.clean import CleanExample, clean_examples
from datablame.data.corpus import Corpus, Row
from datablame.data.loaders import load_records
from datablame.data.templates import TEMPLATE_FIELDS, as_text
from datablame.errors import DatablameError


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


def _assign_ids(kept: list[CleanExample], records: list[dict[str, Any]], cfg: DataConfig) -> list[str]:
    if cfg.id_column:
        ids = [as_text(records[ex.index].get(cfg.id_column)).strip() for ex in kept]
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
    if cfg.num_samples is not None and cfg.num_samples < 1:
        raise DatablameError(
            f"data.num_samples is {cfg.num_samples}.", "set data.num_samples to 1 or more, or null for all"
        )
    records, columns = load_records(cfg)
    where = str(cfg.path)
    check_columns(cfg, columns, where)
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
