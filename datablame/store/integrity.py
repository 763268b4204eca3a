"""Shard integrity when a store is opened for attribution: each shard file's sha256 is checked
against the manifest once, and the verdict is cached in `verified.json` (in the store directory)
keyed by the file's (size, mtime_ns, ctime_ns), so a second `attribute` on an unchanged store
reads no shard bytes. A file whose stamp changed is hashed again; a shard whose bytes no longer
match its hash is refused before any of its rows is used.

The cache is only an optimisation: an unreadable or malformed `verified.json` is ignored (and
rewritten), and a store directory that cannot be written is simply re-hashed every time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError
from datablame.store import manifest as mf
from datablame.utils.io import atomic_write_json

log = logging.getLogger("datablame")

VERIFIED = mf.VERIFIED
_FORMAT = 1
REPAIR_FIX = (
    "rerun the build with the same arguments, without --overwrite (`datablame index --config <run.yaml>`, or "
    "build_store): it re-hashes every shard and recomputes only that shard (deleting the shard file first does "
    "the same); `datablame index --config <run.yaml> --overwrite` rebuilds the whole store."
)


def _stamp(p: Path) -> list[int]:
    st = p.stat()
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns)]


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    """name -> {"stamp": [size, mtime_ns, ctime_ns], "sha256": hex}; {} when absent or unreadable."""
    try:
        obj = json.loads((path / VERIFIED).read_text("utf-8"))
    except (OSError, ValueError):  # absent, unreadable or not JSON: recompute
        return {}
    files = obj.get("files") if isinstance(obj, dict) and obj.get("format") == _FORMAT else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}


def save_cache(path: Path, files: dict[str, dict[str, Any]]) -> None:
    try:
        atomic_write_json(path / VERIFIED, {"format": _FORMAT, "files": files})
    except OSError as e:  # read-only store: verification still happens, it is just not remembered
        log.debug("could not write %s (%s); shards will be re-hashed next time", path / VERIFIED, e)


def remember(path: Path, hashes: dict[str, str]) -> None:
    """Record files the writer just wrote (it hashed their bytes while writing them)."""
    cache = load_cache(path)
    for name, sha in hashes.items():
        try:
            cache[name] = {"stamp": _stamp(path / name), "sha256": sha}
        except OSError:
            cache.pop(name, None)
    save_cache(path, cache)


def _problem(path: Path, entry: dict[str, Any], name: str, what: str) -> str:
    return f"shard {entry['index']} ({name}, rows {entry['start']}-{entry['stop']}) of the feature store at {path} is {what}."


def verify_shards(path: Path, entries: list[dict[str, Any]], *, use_cache: bool = True) -> int:
    """Check every shard and norms file of `entries` against its manifest sha256; returns how
    many files were hashed (0 when every stamp matched the cache). Raises DatablameError naming
    the first missing or corrupted file."""
    old = load_cache(path) if use_cache else {}
    new: dict[str, dict[str, Any]] = {}
    hashed = 0
    try:
        for entry in entries:
            for name, key in ((entry["file"], "sha256"), (entry["norms"], "norms_sha256")):
                p, expected = path / name, entry.get(key)
                try:
                    stamp = _stamp(p)  # before hashing: a change while hashing shows next time
                except FileNotFoundError:
                    raise DatablameError(_problem(path, entry, name, "missing"), REPAIR_FIX) from None
                except OSError as e:
                    raise DatablameError(_problem(path, entry, name, f"unreadable ({e.strerror or e})"), REPAIR_FIX) from None
                hit = old.get(name)
                if hit is not None and hit.get("stamp") == stamp and hit["sha256"] == expected:
                    new[name] = hit
                    continue
                try:
                    got = mf.file_sha256(p)
                except OSError as e:
                    raise DatablameError(_problem(path, entry, name, f"unreadable ({e.strerror or e})"), REPAIR_FIX) from None
                hashed += 1
                if got != expected:
                    raise DatablameError(_problem(path, entry, name, "corrupted (its sha256 does not match the manifest)"), REPAIR_FIX)
                new[name] = {"stamp": stamp, "sha256": got}
    finally:
        if use_cache and new != old:  # keep what was verified, even when a later shard failed
            save_cache(path, new)
    return hashed
