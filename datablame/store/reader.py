"""Open a feature store for reading: memory-mapped fp16 shards, checked against the manifest.

Opening is cheap (the manifest only); shards are memory-mapped on first use and cached, so
queries stream from the page cache without copying the store into memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.store import manifest as mf
from datablame.store.integrity import REPAIR_FIX, verify_shards
from datablame.utils.io import sha256_strings

_RESUME_FIX = "rerun the build with the same arguments (`datablame index` / build_store): it resumes and recomputes only that shard."


class FeatureStore:
    """Read access to a complete store. Rows are in build order; row i is `row_ids[i]`."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.n_rows: int = manifest["n_rows"]
        self.dim: int = manifest["dim"]
        self.identity: dict[str, Any] = manifest["identity"]
        self.config: dict[str, Any] = manifest.get("config", {})
        self.shards: list[dict[str, Any]] = sorted(manifest["shards"], key=lambda e: e["start"])
        self._row_ids: list[str] | None = None
        self._mmaps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, n_rows={self.n_rows}, dim={self.dim}, shards={len(self.shards)})"

    def __len__(self) -> int:
        return self.n_rows

    @property
    def row_ids(self) -> list[str]:
        if self._row_ids is None:
            p = self.path / mf.ROW_IDS
            try:
                ids = json.loads(p.read_text("utf-8"))
            except (OSError, ValueError) as e:
                raise DatablameError(f"row ids of the store at {self.path} are missing or unreadable ({e}).", _RESUME_FIX) from e
            if not isinstance(ids, list) or not all(isinstance(r, str) for r in ids):
                raise DatablameError(f"{p} is not a list of row ids.", _RESUME_FIX)
            if len(ids) < self.n_rows:
                raise DatablameError(f"{p} lists {len(ids)} rows but the store holds {self.n_rows}.", _RESUME_FIX)
            self._row_ids = ids[: self.n_rows]
        return self._row_ids

    def _shard(self, entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        i = entry["index"]
        if i not in self._mmaps:
            rows = entry["stop"] - entry["start"]
            arr = _load_npy(self.path, entry, entry["file"], mmap=True)
            norms = _load_npy(self.path, entry, entry["norms"], mmap=False)
            for name, a, dtypes, shape in ((entry["file"], arr, (np.float16,), (rows, self.dim)),
                                           (entry["norms"], norms, (np.float32,), (rows,))):
                if a.shape != shape or a.dtype not in dtypes:
                    raise DatablameError(
                        f"{self.path / name} (shard {i} of the feature store) holds {a.dtype} {a.shape}; "
                        f"expected {np.dtype(dtypes[0])} {shape}.",
                        REPAIR_FIX,
                    )
            self._mmaps[i] = (arr, norms.astype(np.float32, copy=False))
        return self._mmaps[i]

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start row, fp16 memmap [rows, dim], fp32 norms [rows]) for each shard, in row order."""
        for entry in self.shards:
            arr, norms = self._shard(entry)
            yield entry["start"], arr, norms

    def norms(self) -> np.ndarray:
        """fp32 L2 norm of every row's feature (before the fp16 cast), [n_rows]."""
        return np.concatenate([n for _, _, n in self.iter_shards()]) if self.shards else np.zeros(0, np.float32)

    def load_all(self, dtype: Any = np.float32) -> np.ndarray:
        """Every row in memory as one [n_rows, dim] array (fp16->fp32 via torch, which is fast)."""
        out = np.empty((self.n_rows, self.dim), dtype=dtype)
        for start, arr, _ in self.iter_shards():
            block = out[start : start + arr.shape[0]]
            if np.dtype(dtype) == np.float32:
                torch.from_numpy(block).copy_(readonly_tensor(arr))
            else:
                block[...] = arr
        return out

    def verify(self, cached: bool = False) -> int:
        """Check every shard's sha256 (and the row ids' hash) against the manifest; raise on the
        first mismatch, naming the file. With `cached`, files whose (size, mtime, ctime) match
        `verified.json` are not re-hashed (datablame.store.integrity). Returns files hashed."""
        hashed = verify_shards(self.path, self.shards, use_cache=cached)
        if sha256_strings(self.row_ids) != self.manifest.get("row_ids_sha256"):
            raise DatablameError(f"{self.path / mf.ROW_IDS} does not match the feature store's manifest.", REPAIR_FIX)
        return hashed


def _load_npy(path: Path, entry: dict[str, Any], name: str, *, mmap: bool) -> np.ndarray:
    """np.load of one shard file; an empty, truncated or garbled file is a DatablameError
    naming it (np.load raises EOFError on an empty file, ValueError on a bad header)."""
    try:
        return np.load(path / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        what = "missing"
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        what = f"unreadable ({type(e).__name__}: {e})"
    raise DatablameError(f"{path / name} (shard {entry['index']} of the feature store, rows {entry['start']}-{entry['stop']}) is {what}.", REPAIR_FIX)


def readonly_tensor(arr: np.ndarray) -> torch.Tensor:
    """torch view of a read-only (memory-mapped) array; callers only read from it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def open_store(path: str | Path, *, expect_identity: dict | None = None, verify: bool | str = False) -> FeatureStore:
    """Open the complete store at `path`; with `expect_identity`, refuse features from
    another model/data/projection; with `verify=True`, re-hash every shard first; with
    `verify="cached"`, hash only shards not verified since their file last changed."""
    path = Path(path)
    m = mf.read_manifest(path) if path.is_dir() else None
    if m is None:
        raise DatablameError(
            f"no feature store at {path} (no {mf.MANIFEST}).",
            "build it with `datablame index` (or datablame.store.build_store), or point to the right directory.",
        )
    if not m.get("complete"):
        n_done = sum(e["stop"] - e["start"] for e in m["shards"])
        raise DatablameError(
            f"store at {path} is incomplete ({n_done} of {m['n_rows']} rows featurized, {len(m['shards'])} shards).",
            "rerun the build with the same arguments (`datablame index` / build_store) to resume; finished shards are kept.",
        )
    if expect_identity is not None:
        mf.check_identity(path, m["identity"], expect_identity, "rebuild the store for this model/data (`datablame index` with a new store path), or open the matching store.")
    store = FeatureStore(path, m)
    if verify:
        store.verify(cached=verify == "cached")
    return store
