"""Publish attribution results without losing the previous ones.

A rerun of `attribute` writes its files (results.json, results.md, report.html, scores.npz
and the comparison files) into a staging directory first; only when every one is written
are the previous results moved into `<out_dir>/history/<UTC timestamp>/` and the new ones
renamed into place. So a write that fails leaves the last good results untouched, and a
success keeps them, timestamped, beside the new ones. Every step is a rename within one
directory tree, so no file is copied or half-written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datablame.layout import AttributionLayout
from datablame.utils.io import dir_mode, make_temp_dir

log = logging.getLogger("datablame")

# every file a result consists of (the previous result's are moved together, even the ones
# the new result does not have, so no stale comparison is left beside new scores)
RESULT_FILES = AttributionLayout.RESULT_NAMES


def history_dir(out_dir: str | Path) -> Path:
    return AttributionLayout(out_dir).history_dir


def _new_history_slot(out_dir: Path, created: str | None) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if created:  # name the folder after when the old result was made, if it says
        with contextlib.suppress(ValueError):
            stamp = _dt.datetime.fromisoformat(created).astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = history_dir(out_dir)
    base.mkdir(parents=True, exist_ok=True)
    slot, n = base / stamp, 1
    while True:
        try:
            slot.mkdir(mode=dir_mode())
            return slot
        except FileExistsError:
            n += 1
            slot = base / f"{stamp}-{n}"


def _created(path: Path) -> str | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return raw.get("created") if isinstance(raw, dict) and isinstance(raw.get("created"), str) else None


def publish_results(out_dir: str | Path, write: Callable[[Path], dict[str, Path]]) -> tuple[dict[str, Path], Path | None]:
    """Call `write(staging_dir)` (it writes the new result's files there and returns them by
    kind), then move the previous result into history and the new files into `out_dir`.

    Returns (the new files' paths in `out_dir` by kind, the history folder of the previous
    result or None when there was none)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = make_temp_dir(out_dir, prefix=".new-results-")
    moved: list[tuple[Path, Path]] = []
    try:
        staged = write(staging)
        for p in staged.values():
            if Path(p).parent != staging:
                raise ValueError(f"result file {p} was not written into the staging directory")
        old = [f for f in AttributionLayout(out_dir).result_files() if f.is_file()]
        slot = None
        if old:
            slot = _new_history_slot(out_dir, _created(AttributionLayout(out_dir).results_json))
            for f in old:
                os.replace(f, slot / f.name)
                moved.append((slot / f.name, f))
        final: dict[str, Path] = {}
        for kind, p in staged.items():
            dest = out_dir / Path(p).name
            os.replace(p, dest)
            final[kind] = dest
    except BaseException:
        for src, dest in moved:  # a failed swap: the previous result goes back where it was
            if not dest.exists():
                with contextlib.suppress(OSError):
                    os.replace(src, dest)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if slot is not None:
        log.info("kept the previous results in %s", slot)
    return final, slot


def previous_results(out_dir: str | Path) -> list[Path]:
    """History folders of earlier results, oldest first."""
    base = history_dir(out_dir)
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def store_provenance(store: Any) -> dict[str, Any]:
    """What results.json records about the feature store the row features came from."""
    identity = getattr(store, "identity", {}) or {}
    manifest = getattr(store, "manifest", {}) or {}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "path": str(getattr(store, "path", "")), "identity_sha256": digest, "identity": identity,
        "rows": getattr(store, "n_rows", None), "created": manifest.get("created"),
        "row_ids_sha256": manifest.get("row_ids_sha256"),
    }
