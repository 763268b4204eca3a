"""Store layout, manifest I/O and identity checks shared by the writer and the reader.

A store is one directory: `manifest.json` (the source of truth), `row_ids.json`, and per shard
`shard-NNNNN.npy` (fp16 [rows, dim]) plus `norms-NNNNN.npy` (fp32 L2 norm of each row's fp32
feature, taken before the fp16 cast). The manifest lists only finished shards, with hashes,
so an interrupted build knows exactly what is left to do.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError
from datablame.utils.io import atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROW_IDS = "row_ids.json"
DTYPE = "float16"
# Files this package owns in a store directory (overwrite/cleanup never touches others).
VERIFIED = "verified.json"  # shard verification cache (datablame.store.integrity)
OWNED_GLOBS = ("shard-*.npy", "norms-*.npy", MANIFEST, ROW_IDS, VERIFIED)
TEMP_GLOBS = (".shard-*.tmp", ".norms-*.tmp", f".{MANIFEST}.*.tmp", f".{ROW_IDS}.*.tmp", f".{VERIFIED}.*.tmp")

# How a differing identity key reads in an error message.
_KEY_PHRASES = {
    "model_fingerprint": "another model",
    "data_fingerprint": "another data version",
    "projection": "another projection",
    "modules": "other modules",
}


@dataclass(frozen=True)
class StoreInfo:
    """What a build or append did: sizes, and how much was computed vs reused from disk."""

    path: Path
    n_rows: int
    dim: int
    n_shards: int
    rows_computed: int
    shards_computed: int
    shards_reused: int
    seconds: float
    nbytes: int


def has_manifest(path: str | Path) -> bool:
    """Whether `path` holds a store (its manifest; complete or not)."""
    return (Path(path) / MANIFEST).is_file()


def shard_file(index: int) -> str:
    return f"shard-{index:05d}.npy"


def norms_file(index: int) -> str:
    return f"norms-{index:05d}.npy"


def plan_layout(segments: list[int], n_rows: int, shard_size: int) -> list[tuple[int, int, int]]:
    """(index, start, stop) of every shard. Each build/append segment is cut on its own grid,
    so the layout is a pure function of the manifest and resumes reproduce it exactly."""
    out: list[tuple[int, int, int]] = []
    bounds = [*segments, n_rows]
    for seg_start, seg_stop in zip(bounds[:-1], bounds[1:], strict=True):
        for start in range(seg_start, seg_stop, shard_size):
            out.append((len(out), start, min(start + shard_size, seg_stop)))
    return out


def normalize_identity(identity: Any, what: str = "identity") -> dict[str, Any]:
    """JSON round trip, so tuples/lists and key order never cause a false mismatch."""
    if not isinstance(identity, dict):
        raise DatablameError(
            f"{what} must be a dict (model_fingerprint, data_fingerprint, projection, ...), "
            f"got {type(identity).__name__}.",
            "pass a dict describing the model, data and projection the features come from.",
        )
    try:
        return json.loads(json.dumps(identity, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise DatablameError(
            f"{what} is not JSON-serialisable ({e}).",
            "use only str/int/float/bool/list/dict values in the identity.",
        ) from e


def _short(value: Any, width: int = 16) -> str:
    if value is None:
        return "(absent)"
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return s if len(s) <= width else s[:width] + "…"


def identity_diff(stored: dict[str, Any], given: dict[str, Any]) -> str | None:
    """First differing key (sorted), as 'another model (model_fingerprint abc… vs def…)'."""
    missing = object()
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key, missing), given.get(key, missing)
        if a != b:
            a = None if a is missing else a
            b = None if b is missing else b
            phrase = _KEY_PHRASES.get(key, f"a different {key}")
            return f"{phrase} ({key} {_short(a)} vs {_short(b)})"
    return None


def check_identity(path: Path, stored: dict[str, Any], given: dict[str, Any], fix: str) -> None:
    diff = identity_diff(stored, normalize_identity(given))
    if diff is not None:
        raise DatablameError(f"store at {path} was built from {diff}.", fix)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


REBUILD_FIX = "rebuild the store: `datablame index --config <run.yaml> --overwrite` (or build_store(..., overwrite=True))."
_INT_KEYS = ("dim", "shard_size", "n_rows")
_SHARD_KEYS = {"index": int, "start": int, "stop": int, "file": str, "norms": str, "sha256": str, "norms_sha256": str}


def _manifest_problem(m: Any) -> str | None:
    """What is wrong with a decoded manifest's structure, or None."""
    if not isinstance(m, dict):
        return f"it holds a JSON {type(m).__name__}, not an object"
    for key in (*_INT_KEYS, "row_ids_sha256", "identity", "segments", "shards"):
        if key not in m:
            return f"the key {key!r} is missing"
    for key in _INT_KEYS:
        if isinstance(m[key], bool) or not isinstance(m[key], int) or m[key] < (0 if key == "n_rows" else 1):
            return f"{key} is {m[key]!r}, not a positive integer"
    if not isinstance(m["identity"], dict) or not isinstance(m["row_ids_sha256"], str):
        return "identity or row_ids_sha256 has the wrong type"
    if not isinstance(m["segments"], list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in m["segments"]):
        return "segments is not a list of integers"
    if not isinstance(m["shards"], list):
        return "shards is not a list"
    for n, e in enumerate(m["shards"]):
        if not isinstance(e, dict):
            return f"shards[{n}] is not an object"
        for key, typ in _SHARD_KEYS.items():
            if not isinstance(e.get(key), typ) or isinstance(e.get(key), bool):
                return f"shards[{n}].{key} is missing or not a {typ.__name__}"
        # file names come from the manifest: only this store's own names, never a path elsewhere
        if e["file"] != shard_file(e["index"]) or e["norms"] != norms_file(e["index"]):
            return f"shards[{n}] names files {e['file']!r}/{e['norms']!r}, not this store's own"
        if not 0 <= e["start"] < e["stop"] <= m["n_rows"]:
            return f"shards[{n}] covers rows {e['start']}-{e['stop']}, outside 0-{m['n_rows']}"
    return None


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of the store at `path`, or None when there is none yet. A manifest that is
    not JSON or lacks what the store needs is refused with a message naming the file."""
    mpath = path / MANIFEST
    if not mpath.is_file():
        return None
    try:
        m = json.loads(mpath.read_text("utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DatablameError(f"{mpath} (the feature store's manifest) is unreadable ({type(e).__name__}: {e}).", REBUILD_FIX) from None
    version = m.get("format_version") if isinstance(m, dict) else None
    if isinstance(m, dict) and "format_version" in m and version != FORMAT_VERSION:
        raise DatablameError(
            f"store at {path} has format_version {version}; this datablame reads {FORMAT_VERSION}.",
            "rebuild the store with this version (`datablame index --config <run.yaml> --overwrite`, or build_store(overwrite=True)).",
        )
    problem = _manifest_problem(m) if version == FORMAT_VERSION else "the key 'format_version' is missing"
    if problem is not None:
        raise DatablameError(f"{mpath} (the feature store's manifest) is malformed: {problem}.", REBUILD_FIX)
    return m


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    manifest["complete"] = len(manifest["shards"]) == len(
        plan_layout(manifest["segments"], manifest["n_rows"], manifest["shard_size"])
    )
    atomic_write_json(path / MANIFEST, manifest)


def new_manifest(
    *, dim: int, shard_size: int, identity: dict, config: dict | None, n_rows: int, row_ids_sha256: str
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "dim": int(dim),
        "dtype": DTYPE,
        "shard_size": int(shard_size),
        "n_rows": int(n_rows),
        "row_ids_sha256": row_ids_sha256,
        "segments": [0],
        "identity": identity,
        "config": config or {},
        "shards": [],
        "complete": False,
    }


def check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DatablameError(f"{name} must be a positive integer, got {value!r}.", f"pass {name} >= 1.")
    return value


def default_nlist(n_rows: int) -> int:
    """~4*sqrt(N) IVF lists, but at least 39 training points per list (faiss' minimum)."""
    return max(1, min(round(4 * math.sqrt(n_rows)), n_rows // 39))
