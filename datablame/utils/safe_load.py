"""Reading files that a run directory holds without running code from them.

A run directory can come from anyone (a colleague, a download), so nothing in it is
unpickled: torch files are read with `weights_only=True` (tensors and plain containers only;
a pickle that names any other callable is refused before it runs), JSON is parsed as JSON,
and a damaged file becomes a `DatablameError` that names it.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datablame.errors import DatablameError

log = logging.getLogger("datablame")

# torch.load(weights_only=True) raises this for a pickle that needs anything beyond tensors
# and plain containers (a malicious __reduce__ included); taken from torch so the package
# never imports a pickle module itself
UnpicklingError = torch.serialization.pickle.UnpicklingError
# what reading a damaged or hostile torch file can raise
UNREADABLE = (UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
              AttributeError)
# files in a Trainer checkpoint that nobody reads back (Trainer pickles its arguments there)
_NEVER_LOADED = {"training_args.bin"}
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def _numpy_globals():
    """The numpy types Trainer's rng_state.pth holds, allowed as Trainer allows them."""
    from transformers.trainer_pt_utils import safe_globals

    return safe_globals()


def torch_load_weights(path: str | Path, *, mmap: bool = False, numpy_ok: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU. Raises what torch raises."""
    path = Path(path)
    if numpy_ok:
        with _numpy_globals():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_torch_file(path: str | Path, *, what: str, fix: str, mmap: bool = False, numpy_ok: bool = False) -> Any:
    """`torch_load_weights`, with any failure turned into a DatablameError naming the file."""
    try:
        return torch_load_weights(path, mmap=mmap, numpy_ok=numpy_ok)
    except UNREADABLE as err:
        raise DatablameError(f"cannot read {what} {path} safely ({describe_load_error(err)})", fix) from None


def describe_load_error(err: BaseException) -> str:
    """One line: why a torch file was refused."""
    if isinstance(err, UnpicklingError):
        return "it holds pickled objects other than tensors, which are never unpickled"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def unloadable_checkpoint_file(ckpt: str | Path) -> str | None:
    """Why HF Trainer should not resume from `ckpt`, or None when it may.

    Trainer reads trainer_state.json and the torch files of a checkpoint (rng_state.pth,
    optimizer.pt, scheduler.pt, scaler.pt, weights in .bin form) when it resumes; each must
    parse as JSON / load with `weights_only=True` here first, so a damaged or hostile file
    skips the checkpoint instead of crashing (or running) inside Trainer.
    """
    ckpt = Path(ckpt)
    state = ckpt / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json (an interrupted save?)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{state.name} is unreadable ({type(err).__name__}: {err})"
    for f in sorted(ckpt.iterdir()):
        if not f.is_file() or f.name in _NEVER_LOADED or not f.name.endswith(_TORCH_SUFFIXES):
            continue
        try:
            torch_load_weights(f, mmap=True, numpy_ok=True)
        except UNREADABLE as err:
            return f"{f.name} cannot be loaded safely ({describe_load_error(err)})"
    return None


def read_json(path: str | Path, *, what: str, fix: str) -> Any:
    """A JSON file's content; a missing, unreadable or malformed file raises a DatablameError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatablameError(f"{what} {path} does not exist", fix) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatablameError(f"cannot read {what} {path} ({type(err).__name__}: {err})", fix) from None
    except json.JSONDecodeError as err:
        raise DatablameError(f"{what} {path} is not valid JSON ({err})", fix) from None


# what np.load of a damaged .npz/.npy can raise (allow_pickle=False refuses object arrays: ValueError)
NPZ_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)


def load_npz_cache(path: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Arrays `keys` of a cache .npz, or None (with a warning naming it) when it is damaged:
    the caller recomputes what the cache held."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in keys}
    except NPZ_UNREADABLE as err:
        log.warning("ignoring damaged cache %s (%s: %s); recomputing it", path, type(err).__name__, err)
        return None
