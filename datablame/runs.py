"""Run directories: one per run, with a marker that ties it to its data/model/training config.

A directory that holds another run (different data, model or training settings) is never
reused silently: the user picks another `output.dir`, or sets `output.overwrite: true`, in
which case the old directory is moved aside (renamed), not deleted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.utils.io import atomic_write_json, atomic_write_text

MARKER = "run.json"


def run_key(cfg: RunConfig) -> str:
    """What makes a trained model: data, model and training sections (not attribution).

    Only the settings that differ from their defaults count, so a datablame upgrade that adds
    a new option (with a default that keeps the old behaviour) does not orphan earlier runs.
    """
    d = cfg.model_dump(mode="json", exclude_defaults=True)
    payload = json.dumps({k: d.get(k, {}) for k in ("data", "model", "training")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def full_run_key(cfg: RunConfig) -> str:
    """Every data/model/training field, defaults included: the conservative key the retraining
    job caches use, and the run-directory key of markers written before `run_key` left out
    defaults."""
    d = cfg.model_dump(mode="json")
    payload = json.dumps({k: d[k] for k in ("data", "model", "training")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_run_dir(cfg: RunConfig) -> Path:
    out = Path(cfg.output.dir)
    marker = out / MARKER
    key = run_key(cfg)
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            if not cfg.output.overwrite:
                raise DatablameError(
                    f"output directory {out} is not empty and holds no datablame run",
                    "choose an empty or new output.dir (or set output.overwrite: true to move it aside)",
                )
            _move_aside(out)
        else:
            old = json.loads(marker.read_text(encoding="utf-8"))
            if old.get("run_key") == full_run_key(cfg):  # same run, marker from an older version
                atomic_write_json(marker, {**old, "run_key": key})
            elif old.get("run_key") != key:
                if not cfg.output.overwrite:
                    raise DatablameError(
                        f"output directory {out} holds another run ({old.get('name')!r}, created "
                        f"{old.get('created')}) with different data/model/training settings",
                        "choose another output.dir, or set output.overwrite: true (the old run is "
                        "moved aside, not deleted)",
                    )
                _move_aside(out)
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        atomic_write_json(
            marker,
            {"name": cfg.name, "run_key": key, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        )
    atomic_write_text(out / "config.resolved.yaml", cfg.to_yaml())
    return out


def _move_aside(out: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = out.with_name(f"{out.name}.old-{stamp}")
    out.rename(dest)
    return dest
