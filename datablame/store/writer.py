"""Build and extend a feature store, shard by shard, so an interrupted build resumes.

Each shard is written to a temporary name in the store directory and renamed; the manifest is
rewritten atomically after every finished shard and lists only shards whose bytes are on disk
with their sha256. A rerun with the same identity and rows re-hashes the listed shards, keeps
the good ones (featurize is not called for them, their files are not touched) and recomputes
the rest, including any shard whose bytes no longer match its hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.store import manifest as mf
from datablame.store.integrity import remember
from datablame.utils.io import atomic_write_json, file_mode, sha256_strings

Featurize = Callable[[int, int], "np.ndarray | torch.Tensor"]
_FP16_MAX = 65504.0
_NEW_PATH_FIX = "use a new store path, or delete the store (build_store(..., overwrite=True))."


class _HashingWriter:
    """File wrapper that hashes bytes as np.lib.format writes them (no second read)."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.h = fh, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.h.update(b)
        return self.fh.write(b)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> str:
    """np.save to a temp name in the same directory, fsync, rename; returns the sha256."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would ignore the umask
        with os.fdopen(fd, "wb") as fh:
            w = _HashingWriter(fh)
            np.lib.format.write_array(w, np.ascontiguousarray(arr), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return w.h.hexdigest()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One writer per store: a second concurrent build would interleave shards."""
    try:
        import fcntl
    except ImportError:  # non-POSIX: no lock
        yield
        return
    fh = open(path / ".lock", "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise DatablameError(
                f"another process is writing the store at {path}.",
                "wait for it to finish (or stop it), then rerun; finished shards are kept.",
            ) from e
        yield
    finally:
        fh.close()


def _clean_temps(path: Path) -> None:
    for pattern in mf.TEMP_GLOBS:
        for p in path.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _check_row_ids(row_ids: Any, what: str = "row_ids") -> list[str]:
    if not isinstance(row_ids, (list, tuple)):
        raise DatablameError(f"{what} must be a list of strings, got {type(row_ids).__name__}.", "pass a list of str ids, one per row.")
    ids = list(row_ids)
    for i, r in enumerate(ids):
        if not isinstance(r, str):
            raise DatablameError(f"{what}[{i}] is {type(r).__name__} {r!r}, not a string.", "pass row ids as str (e.g. [str(i) for i in ids]).")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(r for r in ids if r in seen or seen.add(r))
        raise DatablameError(f"{what} contains the id {dup!r} more than once.", "make row ids unique (e.g. prefix them with their source).")
    return ids


def _to_features(out: Any, start: int, stop: int, dim: int, row_ids: list[str]) -> torch.Tensor:
    """Validate featurize's output: shape, finiteness, fp16 range. Returns CPU float32."""
    t = out.detach().cpu() if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out))
    if tuple(t.shape) != (stop - start, dim):
        raise DatablameError(
            f"featurize({start}, {stop}) returned shape {tuple(t.shape)}; expected {(stop - start, dim)}.",
            "return one row of `dim` features per requested row, in order.",
        )
    t = t.to(torch.float32).contiguous()
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise DatablameError(
            f"featurize returned NaN/inf for row {row_ids[start + bad]!r} (row {start + bad}).",
            "check that row (empty completion? diverged model?) and drop or fix it.",
        )
    peak = float(t.abs().max()) if t.numel() else 0.0
    if peak > _FP16_MAX:
        raise DatablameError(
            f"features of rows {start}-{stop} reach {peak:.3g}, beyond float16 range ({_FP16_MAX:.0f}).",
            "scale the features down in featurize (e.g. a smaller projection scale).",
        )
    return t


def _shard_ok(path: Path, entry: dict[str, Any]) -> bool:
    for name, key in ((entry["file"], "sha256"), (entry["norms"], "norms_sha256")):
        p = path / name
        if not p.is_file() or mf.file_sha256(p) != entry.get(key):
            return False
    return True


def _fill(
    path: Path, m: dict[str, Any], featurize: Featurize, row_ids: list[str], offset: int, progress: bool, verified_to: int = 0
) -> tuple[int, int, int]:
    """Compute every planned shard not already good on disk. featurize gets indices minus
    `offset` (so appends see positions within their own new rows). Shards ending at or
    before `verified_to` were just hashed by the caller and are not hashed again."""
    layout = mf.plan_layout(m["segments"], m["n_rows"], m["shard_size"])
    planned = {(i, s, e) for i, s, e in layout}
    kept = [e for e in m["shards"] if (e["index"], e["start"], e["stop"]) in planned and (e["stop"] <= verified_to or _shard_ok(path, e))]
    if len(kept) != len(m["shards"]):
        m["shards"] = kept
        mf.write_manifest(path, m)
    done = {e["index"] for e in kept}
    todo = [x for x in layout if x[0] not in done]
    bar = tqdm(
        total=m["n_rows"] - offset,
        initial=sum(e - s for i, s, e in layout if i in done and s >= offset),
        unit="row", desc=f"featurize -> {path.name}", disable=not progress or not todo,
    )
    rows = 0
    with bar:
        for index, start, stop in todo:
            if start < offset:
                raise DatablameError(
                    f"shard {index} (rows {start}-{stop}) of the store at {path} is missing or corrupted, "
                    "and it belongs to rows this append did not add.",
                    "rerun build_store with the rows that built it (resume recomputes that shard), then append.",
                )
            feats = _to_features(featurize(start - offset, stop - offset), start, stop, m["dim"], row_ids)
            norms = torch.linalg.vector_norm(feats, dim=1).numpy().astype(np.float32)
            entry = {"index": index, "file": mf.shard_file(index), "norms": mf.norms_file(index), "start": start, "stop": stop}
            entry["sha256"] = _atomic_save_npy(path / entry["file"], feats.to(torch.float16).numpy())
            entry["norms_sha256"] = _atomic_save_npy(path / entry["norms"], norms)
            # hashed while written: `attribute` need not re-hash these bytes (verified.json)
            remember(path, {entry["file"]: entry["sha256"], entry["norms"]: entry["norms_sha256"]})
            m["shards"] = sorted([*m["shards"], entry], key=lambda e: e["start"])
            mf.write_manifest(path, m)
            rows += stop - start
            bar.update(stop - start)
    return rows, len(todo), len(done)


def _info(path: Path, m: dict[str, Any], rows: int, computed: int, reused: int, t0: float) -> mf.StoreInfo:
    nbytes = sum((path / e[k]).stat().st_size for e in m["shards"] for k in ("file", "norms"))
    return mf.StoreInfo(path, m["n_rows"], m["dim"], len(m["shards"]), rows, computed, reused, time.perf_counter() - t0, nbytes)


def _write_row_ids(path: Path, ids: list[str], digest: str) -> None:
    p = path / mf.ROW_IDS
    try:
        current = json.loads(p.read_text("utf-8")) if p.is_file() else None
    except (OSError, ValueError):
        current = None
    if current is None or sha256_strings(current) != digest:
        atomic_write_json(p, ids)


def _remove_owned(path: Path) -> None:
    for pattern in (*mf.OWNED_GLOBS, *mf.TEMP_GLOBS):
        for p in path.glob(pattern):
            p.unlink()


def manifest_for(path: Path, *, dim: int, shard_size: int, ident: dict, config: dict | None, ids: list[str],
                 digest: str) -> dict:
    """The store's manifest at `path` (a new one when there is none), refused when it was built
    for another identity, dim, shard size or row list (the caller holds the store's lock)."""
    m = mf.read_manifest(path)
    if m is None:
        return mf.new_manifest(dim=dim, shard_size=shard_size, identity=ident, config=config, n_rows=len(ids),
                               row_ids_sha256=digest)
    mf.check_identity(path, m["identity"], ident, _NEW_PATH_FIX)
    for name, have, want in (("dim", m["dim"], dim), ("shard_size", m["shard_size"], shard_size)):
        if have != want:
            raise DatablameError(f"store at {path} was built with {name} {have}, not {want}.", _NEW_PATH_FIX)
    if m["row_ids_sha256"] != digest:
        raise DatablameError(f"store at {path} holds other rows ({_row_diff(path, m, ids)}).", _NEW_PATH_FIX)
    if config is not None:
        m["config"] = config
    return m


def build_store(
    path: str | Path,
    *,
    n_rows: int,
    row_ids: list[str],
    identity: dict,
    featurize: Featurize,
    dim: int,
    shard_size: int = 4096,
    config: dict | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> mf.StoreInfo:
    """Featurize rows [0, n_rows) into the store at `path`, resuming a previous build.

    `featurize(start, stop)` returns float32 features [stop-start, dim] (numpy or torch).
    A store built from another identity, dim, shard size or row list is refused (nothing is
    deleted) unless `overwrite=True`, which removes only this store's own files first.
    """
    path = Path(path)
    mf.check_positive("n_rows", n_rows)
    mf.check_positive("dim", dim)
    mf.check_positive("shard_size", shard_size)
    ids = _check_row_ids(row_ids)
    if len(ids) != n_rows:
        raise DatablameError(f"n_rows is {n_rows} but {len(ids)} row ids were given.", "pass one id per row.")
    ident = mf.normalize_identity(identity)
    digest = sha256_strings(ids)
    t0 = time.perf_counter()
    if path.exists() and not path.is_dir():
        raise DatablameError(f"store path {path} is a file, not a directory.", "pass a directory path for the store.")
    path.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        if overwrite:
            _remove_owned(path)
        _clean_temps(path)
        m = manifest_for(path, dim=dim, shard_size=shard_size, ident=ident, config=config, ids=ids, digest=digest)
        _write_row_ids(path, ids, digest)
        mf.write_manifest(path, m)
        rows, computed, reused = _fill(path, m, featurize, ids, 0, progress)
        return _info(path, m, rows, computed, reused, t0)


def _row_diff(path: Path, m: dict[str, Any], ids: list[str]) -> str:
    """Human summary of how the stored row ids differ from `ids`."""
    try:
        stored = json.loads((path / mf.ROW_IDS).read_text("utf-8"))[: m["n_rows"]]
    except (OSError, ValueError):
        return f"{m['n_rows']} stored rows vs {len(ids)} given"
    if len(stored) != len(ids):
        return f"{len(stored)} stored rows vs {len(ids)} given"
    i = next(i for i, (a, b) in enumerate(zip(stored, ids, strict=True)) if a != b)
    return f"row {i} is {stored[i]!r} in the store vs {ids[i]!r} given"


def append_rows(
    path: str | Path,
    row_ids: list[str],
    featurize: Featurize,
    *,
    identity: dict,
    progress: bool = True,
) -> mf.StoreInfo:
    """Add new rows to a complete store as new shards (no existing shard is rewritten).

    `featurize(start, stop)` is indexed within `row_ids` (0 = first new row). An interrupted
    append resumes when rerun with the same new rows.
    """
    path = Path(path)
    new = _check_row_ids(row_ids)
    if not new:
        raise DatablameError("append_rows got no rows.", "pass at least one new row id.")
    ident = mf.normalize_identity(identity)
    t0 = time.perf_counter()
    m = mf.read_manifest(path) if path.is_dir() else None
    if m is None:
        raise DatablameError(f"no feature store at {path} to append to.", "build it first with `datablame index` (build_store).")
    with _lock(path):
        _clean_temps(path)
        mf.check_identity(path, m["identity"], ident, "append rows featurized with the store's model, data version and projection, or build a new store.")
        stored = json.loads((path / mf.ROW_IDS).read_text("utf-8"))[: m["n_rows"]]
        resuming = (
            not m["complete"]
            and len(m["segments"]) > 1
            and stored[m["segments"][-1]:] == new
            and sha256_strings(stored) == m["row_ids_sha256"]
        )
        if resuming:
            all_ids, offset = stored, m["segments"][-1]
        else:
            if not m["complete"]:
                raise DatablameError(
                    f"store at {path} is incomplete ({len(m['shards'])} shards finished).",
                    "rerun the build or append that started it (it resumes), then append.",
                )
            if sha256_strings(stored) != m["row_ids_sha256"]:
                raise DatablameError(f"row_ids.json of the store at {path} does not match its manifest.", "rerun build_store with the original rows (it rewrites the ids), then append.")
            bad = next((e for e in m["shards"] if not _shard_ok(path, e)), None)
            if bad is not None:
                raise DatablameError(
                    f"shard {bad['index']} ({bad['file']}, rows {bad['start']}-{bad['stop']}) of the store at {path} is missing or corrupted.",
                    "rerun build_store with the rows that built the store (resume recomputes only that shard), then append.",
                )
            have = set(stored)
            dup = next((r for r in new if r in have), None)
            if dup is not None:
                raise DatablameError(f"row {dup!r} is already in the store at {path}.", "append only rows that are not in the store yet.")
            offset, all_ids = m["n_rows"], stored + new
            _write_row_ids(path, all_ids, sha256_strings(all_ids))
            m["segments"] = [*m["segments"], offset]
            m["n_rows"], m["row_ids_sha256"] = len(all_ids), sha256_strings(all_ids)
            mf.write_manifest(path, m)
        rows, computed, reused = _fill(path, m, featurize, all_ids, offset, progress, 0 if resuming else offset)
        return _info(path, m, rows, computed, reused, t0)
