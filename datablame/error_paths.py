"""One error path: the exceptions bad files and paths raise, as one-line messages with a fix.

`as_datablame_error(err)` turns an OSError (permission denied, read-only file system, a file
where a directory belongs, a missing path, a full disk), a JSON/YAML/Unicode decode error,
an EOFError (empty or truncated file), a `re.error` or a pydantic ValidationError into a
`DatablameError` naming the file or field. The CLI's `friendly` decorator reports them this
way; code that knows better (which file it was reading, which flag set a field) raises a
DatablameError itself.
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from datablame.errors import DatablameError

FILE_AND_INPUT_ERRORS = (OSError, json.JSONDecodeError, yaml.YAMLError, EOFError, UnicodeDecodeError, re.error,
                         ValidationError)

_DAMAGED_FIX = "the file is damaged: restore it, or delete it and rerun the step that writes it"
# names of locals that hold the file being read, in datablame's code
_PATH_NAMES = ("path", "file", "f", "fname", "filename", "p", "mpath", "npz", "state", "src")


def _path_in_traceback(err: BaseException, suffixes: tuple[str, ...] = ()) -> str | None:
    """The existing file a frame of the traceback was reading (innermost first), if any."""
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in _PATH_NAMES:
            value = frame.f_locals.get(name)
            if not isinstance(value, str | Path) or not str(value) or len(str(value)) > 4096:
                continue
            try:
                candidate = Path(value)
                if candidate.is_file() and (not suffixes or candidate.name.endswith(suffixes)):
                    return str(candidate)
            except (OSError, ValueError):
                continue
    return None


def _os_error(err: OSError) -> DatablameError:
    name = err.filename if err.filename is not None else _path_in_traceback(err)
    where = f" {name}" if name is not None else ""
    other = f" -> {err.filename2}" if getattr(err, "filename2", None) else ""
    if isinstance(err, PermissionError):
        return DatablameError(f"permission denied:{where}{other}",
                              "make it readable/writable for you (chmod/chown), or set output.dir to a folder you own")
    if err.errno == errno.EROFS:
        return DatablameError(f"read-only file system:{where}{other}", "set output.dir to a writable location")
    if err.errno == errno.ENOSPC:
        return DatablameError(f"no space left on the device writing{where}", "free disk space, or set output.dir "
                              "to a disk with room")
    if isinstance(err, NotADirectoryError):
        return DatablameError(f"a part of the path{where} is a file, not a directory",
                              "remove or rename that file, or choose another path (output.dir)")
    if isinstance(err, FileExistsError):
        return DatablameError(f"{name} already exists (a file where a directory is needed?)",
                              "remove or rename it, or choose another path (output.dir)")
    if isinstance(err, IsADirectoryError):
        return DatablameError(f"{name} is a directory where a file is expected", "point the setting at a file")
    if isinstance(err, FileNotFoundError):
        return DatablameError(f"{name} does not exist", "check the path in the config or on the command line")
    reason = err.strerror or str(err) or type(err).__name__
    return DatablameError(f"{reason}:{where}{other}", "check the path, its permissions and the disk")


def _validation_error(err: ValidationError) -> DatablameError:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ())) or err.title
        parts.append(f"{loc}: {e.get('msg', 'invalid').removeprefix('Value error, ')} (got {e.get('input')!r})")
    more = f" (and {err.error_count() - 3} more)" if err.error_count() > 3 else ""
    fields = ", ".join(".".join(str(x) for x in e.get("loc", ())) for e in err.errors()[:3])
    return DatablameError("invalid value: " + "; ".join(parts) + more, f"change {fields or err.title}")


def as_datablame_error(err: BaseException) -> DatablameError:
    """The one-line message (and fix) for an error of FILE_AND_INPUT_ERRORS."""
    if isinstance(err, DatablameError):
        return err
    if isinstance(err, ValidationError):
        return _validation_error(err)
    if isinstance(err, json.JSONDecodeError):
        name = _path_in_traceback(err, (".json", ".jsonl")) or "a JSON file"
        return DatablameError(f"{name} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
                              _DAMAGED_FIX)
    if isinstance(err, UnicodeDecodeError):
        name = _path_in_traceback(err) or "a text file"
        return DatablameError(f"{name} is not UTF-8 text ({err.reason} at byte {err.start})",
                              "save it as UTF-8 (or restore it if it was damaged)")
    if isinstance(err, yaml.YAMLError):
        name = _path_in_traceback(err, (".yaml", ".yml")) or "a YAML file"
        first = str(err).strip().splitlines()
        return DatablameError(f"{name} is not valid YAML ({' '.join(first[:2])[:200]})", "fix the YAML syntax")
    if isinstance(err, EOFError):
        name = _path_in_traceback(err) or "a file"
        return DatablameError(f"{name} ends early (empty or truncated)", _DAMAGED_FIX)
    if isinstance(err, re.error):
        return DatablameError(f"invalid regular expression {err.pattern!r}: {err.msg}",
                              "fix the regex (e.g. attribution.modules.pattern); escape special characters with \\")
    if isinstance(err, OSError):
        return _os_error(err)
    raise TypeError(f"not a file or input error: {type(err).__name__}")
