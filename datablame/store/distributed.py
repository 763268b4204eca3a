"""Featurize one store from several processes (ranks), each taking a contiguous range of the
shards still to do, with the same featurize (same model and projection) into the same store.

The manifest has one writer: rank 0. The protocol (`datablame.api_distributed` runs it under
torchrun with a gloo barrier between the steps):

1. rank 0: `prepare_store` creates or checks the manifest and row ids (as `build_store`
   does) and folds in any per-rank part files a killed run left behind, keeping only shards
   whose bytes still match the hash the rank recorded;  --- barrier ---
2. every rank: `featurize_rank` computes its share of the shards not yet in the manifest,
   writing each shard atomically and recording it (with its hashes) in its own part file
   `parts-rank<r>.json`, rewritten atomically after every shard;  --- barrier ---
3. rank 0: `merge_parts` folds every part file into the manifest (one atomic write) and
   removes them.

A rank killed midway loses only its unfinished shard: its part file lists what it finished,
and the next run (any number of ranks) reuses those shards and recomputes the rest.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.store import manifest as mf
from datablame.store.integrity import remember
from datablame.store.writer import (
    Featurize,
    _atomic_save_npy,
    _check_row_ids,
    _clean_temps,
    _lock,
    _remove_owned,
    _shard_ok,
    _to_features,
    _write_row_ids,
    manifest_for,
)
from datablame.utils.io import atomic_write_json, sha256_strings

PART_GLOB = "parts-rank*.json"


def part_file(rank: int) -> str:
    return f"parts-rank{rank}.json"


def check_workers(n_rows: int, shard_size: int, world: int) -> int:
    """The number of shards; more ranks than shards is refused (a rank would have nothing)."""
    mf.check_positive("workers", world)
    n_shards = len(mf.plan_layout([0], n_rows, shard_size))
    if world > n_shards:
        raise DatablameError(
            f"{world} workers for a store of {n_rows} rows in {n_shards} shards of {shard_size} rows: "
            "some workers would have no shard.",
            f"use --workers {n_shards} or fewer, or a smaller attribution.store.shard_rows.",
        )
    return n_shards


def _read_parts(path: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(path.glob(PART_GLOB)):
        with contextlib.suppress(OSError, ValueError):
            entries = json.loads(p.read_text("utf-8"))
            if isinstance(entries, list):
                out.extend(e for e in entries if isinstance(e, dict))
    return out


def _fold(path: Path, m: dict[str, Any], entries: list[dict[str, Any]], *, verify: bool) -> int:
    """Add part-file entries that fit the manifest's layout (and, with `verify`, whose bytes
    match) to `m["shards"]`; returns how many were added."""
    planned = {(i, s, e) for i, s, e in mf.plan_layout(m["segments"], m["n_rows"], m["shard_size"])}
    have = {e["index"] for e in m["shards"]}
    added = []
    for e in entries:
        key = (e.get("index"), e.get("start"), e.get("stop"))
        if key in planned and e["index"] not in have and e.get("file") == mf.shard_file(e["index"]) \
                and e.get("norms") == mf.norms_file(e["index"]) and (not verify or _shard_ok(path, e)):
            added.append(e)
            have.add(e["index"])
    m["shards"] = sorted([*m["shards"], *added], key=lambda e: e["start"])
    return len(added)


def prepare_store(
    path: str | Path, *, n_rows: int, row_ids: list[str], identity: dict, dim: int, shard_size: int,
    world: int, config: dict | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """Rank 0, before the ranks start: the store's manifest (created, or checked like
    `build_store` checks it), with finished shards of a killed run folded in; returns it."""
    path = Path(path)
    mf.check_positive("n_rows", n_rows)
    mf.check_positive("dim", dim)
    mf.check_positive("shard_size", shard_size)
    check_workers(n_rows, shard_size, world)
    ids = _check_row_ids(row_ids)
    if len(ids) != n_rows:
        raise DatablameError(f"n_rows is {n_rows} but {len(ids)} row ids were given.", "pass one id per row.")
    ident, digest = mf.normalize_identity(identity), sha256_strings(ids)
    path.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        if overwrite:
            _remove_owned(path)
            for p in path.glob(PART_GLOB):
                p.unlink()
        _clean_temps(path)
        m = manifest_for(path, dim=dim, shard_size=shard_size, ident=ident, config=config, ids=ids, digest=digest)
        m["shards"] = [e for e in m["shards"] if _shard_ok(path, e)]  # a killed run's finished shards, re-hashed
        _write_row_ids(path, ids, digest)
        _fold(path, m, _read_parts(path), verify=True)
        mf.write_manifest(path, m)
        for p in path.glob(PART_GLOB):
            p.unlink()
        return m


def rank_shards(m: dict[str, Any], rank: int, world: int) -> list[tuple[int, int, int]]:
    """This rank's contiguous range of the shards the manifest does not list yet."""
    done = {e["index"] for e in m["shards"]}
    todo = [x for x in mf.plan_layout(m["segments"], m["n_rows"], m["shard_size"]) if x[0] not in done]
    bounds = np.linspace(0, len(todo), world + 1).round().astype(int)
    return todo[bounds[rank] : bounds[rank + 1]]


def featurize_rank(path: str | Path, featurize: Featurize, *, rank: int, world: int) -> int:
    """Compute this rank's shards (after `prepare_store`), each written atomically and listed
    in the rank's part file; returns the rows computed."""
    path = Path(path)
    m = mf.read_manifest(path)
    if m is None:
        raise DatablameError(f"no feature store at {path} to featurize into.", "run prepare_store on rank 0 first.")
    ids = json.loads((path / mf.ROW_IDS).read_text("utf-8"))
    part, entries, rows = path / part_file(rank), [], 0
    for index, start, stop in rank_shards(m, rank, world):
        feats = _to_features(featurize(start, stop), start, stop, m["dim"], ids)
        norms = torch.linalg.vector_norm(feats, dim=1).numpy().astype(np.float32)
        entry = {"index": index, "file": mf.shard_file(index), "norms": mf.norms_file(index), "start": start, "stop": stop}
        entry["sha256"] = _atomic_save_npy(path / entry["file"], feats.to(torch.float16).numpy())
        entry["norms_sha256"] = _atomic_save_npy(path / entry["norms"], norms)
        entries.append(entry)
        atomic_write_json(part, entries)
        rows += stop - start
    return rows


def merge_parts(path: str | Path) -> dict[str, Any]:
    """Rank 0, after every rank finished: fold the part files into the manifest (one atomic
    write; their hashes were taken while the bytes were written) and remove them."""
    path = Path(path)
    with _lock(path):
        m = mf.read_manifest(path)
        if m is None:
            raise DatablameError(f"no feature store at {path} to merge into.", "run prepare_store on rank 0 first.")
        parts = _read_parts(path)
        _fold(path, m, parts, verify=False)
        mf.write_manifest(path, m)
        remember(path, {e[k]: e[h] for e in parts for k, h in (("file", "sha256"), ("norms", "norms_sha256"))})
        for p in path.glob(PART_GLOB):
            p.unlink()
        return m
