"""Load raw records (one dict per row) from JSONL/JSON, CSV, Parquet or Hugging Face datasets.

`load_records(cfg)` returns ``(records, columns)``. Every failure the user can fix (missing
path, corrupt file, unknown format, a hub id that cannot be reached) is a `DatablameError`
that names the fix. Local paths never touch the network.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datablame.config import DataConfig
from datablame.errors import DatablameError

FORMATS = ("jsonl", "csv", "parquet", "hf")
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".parquet": "parquet", ".pq": "parquet"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def detect_format(cfg: DataConfig) -> str:
    """The format to read `cfg.path` with (`cfg.format`, or guessed when it is `auto`)."""
    if cfg.format != "auto":
        return cfg.format
    if cfg.source == "hf":
        return "hf"
    path = Path(cfg.path or "").expanduser()
    if path.is_dir():
        return "hf"
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DatablameError(
            f"cannot tell the format of data.path {cfg.path!r} from its extension "
            f"{path.suffix or '(none)'!r}.",
            f"set data.format to one of {', '.join(FORMATS)}, or rename the file to "
            ".jsonl/.json, .csv or .parquet",
        )
    return fmt


def load_records(cfg: DataConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Read the rows named by `cfg` (path, format, split) as plain dicts, plus the column names."""
    if not cfg.path:
        raise DatablameError("data.path is not set.", "set data.path to a file or dataset dir")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        if (cfg.source == "hf" or cfg.format == "hf") and looks_like_hub_id(cfg.path):
            records, columns = _load_hub(cfg.path, cfg.split)
            return _nonempty(records, columns, cfg.path)
        raise DatablameError(
            f"data.path {str(path)!r} does not exist (resolved against {Path.cwd()}).",
            "point data.path at an existing file or `save_to_disk` directory (for a hub "
            "dataset id, set data.source: hf)",
        )
    fmt = detect_format(cfg)
    if fmt == "hf":
        records, columns = _load_hf_local(path, cfg.split)
    elif path.is_dir():
        raise DatablameError(
            f"data.path {str(path)!r} is a directory but data.format is {fmt!r}.",
            "point data.path at the file itself, or set data.format: hf for a datasets dir",
        )
    elif fmt == "jsonl":
        records, columns = _load_json(path)
    elif fmt == "csv":
        records, columns = _load_csv(path)
    else:
        records, columns = _load_parquet(path)
    return _nonempty(records, columns, str(path))


def looks_like_hub_id(path: str) -> bool:
    """`owner/name` or `name`, without path syntax (./, ../, leading /, ~, backslashes)."""
    return bool(_HUB_ID.match(path)) and ".." not in path


def _nonempty(records: list[dict[str, Any]], columns: list[str], where: str):
    if not records:
        raise DatablameError(
            f"{where} contains no rows.", "check that data.path (and data.split) name the data"
        )
    return records, columns


def _columns_of(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python values, NaN -> None (so rows are JSON-friendly)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatablameError(
            f"{path} is not UTF-8 text (byte {err.start}).", "re-save the file as UTF-8"
        ) from None
    except OSError as err:
        raise DatablameError(f"cannot read {path}: {err.strerror}.", "check the file's permissions") from None


def _load_json(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON Lines (one object a line; blank lines skipped), or a .json array of objects."""
    text = _read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
            if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
                data = next(iter(data.values()))  # {"data": [...]} style
        except json.JSONDecodeError:
            data = None  # maybe JSON Lines with a .json name: parse line by line below
        if isinstance(data, list):
            for i, rec in enumerate(data):
                if not isinstance(rec, dict):
                    raise DatablameError(
                        f"{path}: item {i} of the JSON array is a {type(rec).__name__}, not an object.",
                        "make every item a {\"column\": value} object",
                    )
            return data, _columns_of(data)
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatablameError(
                f"{path} is not valid JSON Lines: invalid JSON on line {n} ({err.msg}, column {err.colno}).",
                f"fix line {n} so that every line is one JSON object, or remove it",
            ) from None
        if not isinstance(rec, dict):
            raise DatablameError(
                f"{path}: line {n} is a JSON {type(rec).__name__}, not an object.",
                f"make line {n} a {{\"column\": value}} object",
            )
        records.append(rec)
    return records, _columns_of(records)


def _load_csv(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DatablameError(f"{path} is empty.", "point data.path at a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DatablameError(
            f"{path} is not a readable CSV file: {str(err).strip()}",
            "fix the CSV (one header row, quoted fields containing commas/newlines, UTF-8)",
        ) from None
    columns = [str(c) for c in df.columns]
    df.columns = columns
    return df.to_dict(orient="records"), columns


def _load_parquet(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DatablameError(
            f"{path} is not a readable Parquet file: {err}",
            "re-export it (e.g. pandas `df.to_parquet(path)`), or set data.format to its real format",
        ) from None
    records = [{k: _plain(v) for k, v in r.items()} for r in table.to_pylist()]
    return records, list(table.column_names)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Make `datasets` / `huggingface_hub` skip the network while reading a local path."""
    import datasets.config as dconf
    import huggingface_hub.constants as hconst

    old = (dconf.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE)
    dconf.HF_HUB_OFFLINE = hconst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dconf.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE = old


def _pick_split(ds: Any, split: str, where: str) -> Any:
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DatablameError(
                f"{where} has no split {split!r}; it has {sorted(ds)}.",
                f"set data.split to one of {sorted(ds)}",
            )
        return ds[split]
    return ds


def _from_dataset(ds: Any) -> tuple[list[dict[str, Any]], list[str]]:
    records = [{k: _plain(v) for k, v in r.items()} for r in ds.to_list()]
    return records, list(ds.column_names)


def _load_hf_local(path: Path, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A `save_to_disk` directory (Dataset or DatasetDict), else a local data dir / script."""
    import datasets

    saved = (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()
    try:
        with _offline():
            if saved:
                ds = _pick_split(datasets.load_from_disk(str(path)), split, str(path))
            else:
                ds = datasets.load_dataset(str(path), split=split)
    except DatablameError:
        raise
    except ValueError as err:
        if "split" in str(err).lower():
            raise DatablameError(
                f"{path}: {err}", "set data.split to one of the dataset's splits"
            ) from None
        raise _hf_error(path, err) from None
    except Exception as err:  # datasets raises many types for unreadable dirs
        raise _hf_error(path, err) from None
    return _from_dataset(ds)


def _hf_error(path: Path, err: Exception) -> DatablameError:
    return DatablameError(
        f"cannot read {path} as a Hugging Face dataset: {type(err).__name__}: {err}",
        "point data.path at a `Dataset.save_to_disk` directory or a dir of data files "
        "(or at a .jsonl/.csv/.parquet file)",
    )


def _load_hub(repo_id: str, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    import datasets

    fix = (
        f"download it where you have network (`datasets.load_dataset({repo_id!r}, "
        f"split={split!r}).save_to_disk('DIR')`), copy DIR here and point data.path at it"
    )
    try:
        ds = datasets.load_dataset(repo_id, split=split)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DatablameError(
                f"hub dataset {repo_id!r}: {err}", "set data.split to one of the dataset's splits"
            ) from None
        raise DatablameError(f"cannot load hub dataset {repo_id!r}: {err}", fix) from None
    except Exception as err:  # offline, unknown repo, connection errors
        raise DatablameError(
            f"data.path {repo_id!r} is not a local path and the hub dataset could not be "
            f"loaded ({type(err).__name__}: {err}).",
            fix,
        ) from None
    return _from_dataset(_pick_split(ds, split, repo_id))
