"""Atomic writes and content fingerprints.

Every file datablame produces is written to a temporary name in the same directory and
renamed, so an interrupted run never leaves a half-written result behind. `mkstemp` and
`mkdtemp` create 0600 files and 0700 directories whatever the umask; the files and folders
renamed into place get the permissions an ordinary `open`/`mkdir` would have given them
(0666 / 0777 less the umask), so a team can share a run (`file_mode`, `make_temp_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by the
    set-and-restore dance with a restrictive interim value (never a window of umask 0)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What `open(path, "w")` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """What `mkdir` would give a new directory: 0o777 less the umask."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent: str | Path | None = None, prefix: str = "tmp", suffix: str = "") -> Path:
    """`tempfile.mkdtemp` with the permissions of an ordinary directory (umask respected),
    for temporary directories that are renamed into place as outputs."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    os.chmod(tmp, dir_mode())
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would ignore the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """np.save to a temporary name, then rename."""
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """np.savez_compressed to a temporary name, then rename."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def sha256_strings(items: Iterable[str]) -> str:
    """Order-sensitive hash of a sequence of strings (length-prefixed, so no ambiguity)."""
    h = hashlib.sha256()
    for s in items:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
