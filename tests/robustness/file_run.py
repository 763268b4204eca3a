"""A small file-based run (JSONL Q/A rows, 2-layer tiny Llama) driven through the CLI; shared
by the stale-artifact and overwrite/history tests (imported by name: pytest puts this folder
on sys.path)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import yaml

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi", "Riga", "Bern", "Doha", "Kyiv"]


def write_rows(path: Path, edit: dict[int, str] | None = None) -> Path:
    """24 Q/A rows; `edit` replaces the answer of some rows (same path, new content)."""
    rows = []
    for i in range(24):
        country = f"Country{i}"
        answer = (edit or {}).get(i, f" The capital of {country} is {CITIES[i % len(CITIES)]}.")
        rows.append({"id": f"r{i:02d}", "question": f"What is the capital of {country}?", "answer": answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def raw_config(out: Path, data: Path, **over) -> dict:
    raw = {
        "name": "stale",
        "data": {"source": "file", "path": str(data), "format": "jsonl", "id_column": "id"},
        "model": {"kind": "tiny", "max_length": 64,
                  "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300}},
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 3e-3,
                     "lr_scheduler_type": "constant", "save_steps": 2, "logging_steps": 50},
        "attribution": {"method": "grad_cosine", "top_k": 3, "batch_size": 8,
                        "queries": [{"prompt": "What is the capital of Country1?",
                                     "completion": " The capital of Country1 is Rome.", "query_id": "q1"}]},
        "output": {"dir": str(out)},
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v}
    return raw


def write_config(path: Path, out: Path, data: Path, **over) -> Path:
    path.write_text(yaml.safe_dump(raw_config(out, data, **over), sort_keys=False), encoding="utf-8")
    return path


def cli(*args: str):
    """Run `datablame <args>` in-process; returns the click Result (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from datablame.cli import app

    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(res.exception)))
    return res


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content): equal before and after = untouched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
