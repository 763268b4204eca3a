"""Corrupt feature-store data is refused, never ranked: `attribute` on a store whose shard,
norms, manifest, row ids or row losses were damaged exits 2 with one message naming the file
and the fix, and the earlier results are byte-identical afterwards. Shard hashes are checked
once and cached by file stamp (verified.json), so an unchanged store is not re-hashed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_config import small_config
from typer.testing import CliRunner

from datablame import api
from datablame.cli import app
from datablame.errors import DatablameError
from datablame.store import open_store
from datablame.store.integrity import VERIFIED, load_cache
from datablame.store.reader import FeatureStore

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained small run, indexed (shards of 16 rows), attributed once from its store."""
    root = tmp_path_factory.mktemp("integrity")
    cfg = small_config(root / "out", attribution={"store": {"shard_rows": 16}})
    outcome = api.run(cfg)
    api.index(cfg, faiss="none", progress=False, text_indices=False)
    cfg_path = root / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = runner.invoke(app, ["attribute", "--config", str(cfg_path)])
    assert res.exit_code == 0, res.output
    store = api.store_dir(outcome.run_dir)
    pristine = root / "pristine-store"
    shutil.copytree(store, pristine)
    return cfg, cfg_path, outcome.run_dir, store, pristine


@pytest.fixture
def fresh(run):
    """The run with its store restored to the pristine copy before (and after) each test."""
    cfg, cfg_path, run_dir, store, pristine = run

    def restore() -> None:
        shutil.rmtree(store)
        shutil.copytree(pristine, store)

    restore()
    yield cfg, cfg_path, run_dir, store
    restore()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _flip(p: Path, offset: int = -7) -> None:
    """Change bytes in place, same size (data region by default; the header with offset >= 0)."""
    b = bytearray(p.read_bytes())
    for i in range(4):
        b[offset - i] ^= 0x5A
    p.write_bytes(bytes(b))


def _manifest_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(store: Path) -> None:
        m = json.loads((store / "manifest.json").read_text())
        edit(m)
        (store / "manifest.json").write_text(json.dumps(m))
    return apply


def _first_loss_file(store: Path) -> Path:
    return sorted((store / "row_losses").glob("*.npy"))[0]


# (case id, fault applied to the store directory, file the message must name)
FAULTS: list[tuple[str, Callable[[Path], None], str]] = [
    ("shard bytes flipped, same size", lambda s: _flip(s / "shard-00001.npy"), "shard-00001.npy"),
    ("shard header garbled, same size", lambda s: _flip(s / "shard-00000.npy", offset=20), "shard-00000.npy"),
    ("shard truncated", lambda s: os.truncate(s / "shard-00002.npy", 100), "shard-00002.npy"),
    ("shard missing", lambda s: (s / "shard-00003.npy").unlink(), "shard-00003.npy"),
    ("norms empty", lambda s: os.truncate(s / "norms-00000.npy", 0), "norms-00000.npy"),
    ("norms truncated", lambda s: os.truncate(s / "norms-00001.npy", 90), "norms-00001.npy"),
    ("norms bytes flipped", lambda s: _flip(s / "norms-00002.npy"), "norms-00002.npy"),
    ("manifest not JSON", lambda s: (s / "manifest.json").write_text('{"format_version": 1, "dim": '), "manifest.json"),
    ("manifest empty", lambda s: (s / "manifest.json").write_text(""), "manifest.json"),
    ("manifest lacks n_rows", _manifest_edit(lambda m: m.pop("n_rows")), "manifest.json"),
    ("manifest shard lacks its hash", _manifest_edit(lambda m: m["shards"][0].pop("sha256")), "manifest.json"),
    ("manifest names a file elsewhere", _manifest_edit(lambda m: m["shards"][0].update(file="../../x.npy")), "manifest.json"),
    ("manifest is a list", lambda s: (s / "manifest.json").write_text("[]"), "manifest.json"),
    ("row ids changed", lambda s: (s / "row_ids.json").write_text(json.dumps(["x"] * 200)), "row_ids.json"),
    ("row losses truncated", lambda s: os.truncate(_first_loss_file(s), 10), "row_losses"),
]


@pytest.mark.parametrize(("fault", "names"), [(f, n) for _, f, n in FAULTS], ids=[c for c, _, _ in FAULTS])
def test_corrupt_store_is_refused_and_results_kept(fresh, fault, names):
    _, cfg_path, run_dir, store = fresh
    before = _snapshot(run_dir / "attribution")
    assert any(k.endswith("results.json") for k in before)
    fault(store)
    res = runner.invoke(app, ["attribute", "--config", str(cfg_path)])
    assert res.exit_code == 2, res.output
    assert names in res.output, res.output
    assert "datablame index" in res.output, res.output  # the fix
    assert "Traceback" not in res.output and "Aborted" not in res.output
    assert _snapshot(run_dir / "attribution") == before


def test_writer_primes_the_cache_and_unchanged_store_is_not_rehashed(tmp_path):
    from datablame.store import build_store

    store = tmp_path / "store"
    feats = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    build_store(store, n_rows=50, row_ids=[f"r{i}" for i in range(50)], identity={"m": 1},
                featurize=lambda a, b: feats[a:b], dim=8, shard_size=16, progress=False)
    entries = json.loads((store / "manifest.json").read_text())["shards"]
    assert len(load_cache(store)) == 2 * len(entries)  # every shard and norms file, from the build
    s = open_store(store)
    assert s.verify(cached=True) == 0  # the build hashed what it wrote: nothing to re-hash
    os.utime(store / "shard-00001.npy", ns=(1, 1))  # new stamp, same bytes: re-hashed once, accepted
    assert s.verify(cached=True) == 1
    assert s.verify(cached=True) == 0
    assert s.verify() == 2 * len(entries)  # a full verify ignores the cache


@pytest.mark.parametrize("garbage", ["", "{not json", "[]", '{"format": 1, "files": 7}', '{"format": 1, "files": {"shard-00000.npy": 3}}'])
def test_unreadable_verification_cache_is_ignored(fresh, garbage):
    _, _, _, store = fresh
    n = len(json.loads((store / "manifest.json").read_text())["shards"])
    (store / VERIFIED).write_text(garbage)
    s = open_store(store)
    assert s.verify(cached=True) == 2 * n  # recomputed ...
    assert s.verify(cached=True) == 0  # ... and rewritten


def test_cache_does_not_hide_a_changed_file(fresh):
    """Same size, bytes changed: the stamp differs from the cached one, so it is re-hashed."""
    _, _, _, store = fresh
    s = open_store(store)
    s.verify(cached=True)  # the restored copy has new stamps: hashed once here
    assert s.verify(cached=True) == 0
    _flip(store / "shard-00002.npy")
    with pytest.raises(DatablameError, match="shard-00002.npy") as err:
        s.verify(cached=True)
    assert "corrupted" in err.value.problem and "--overwrite" in err.value.fix


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: os.truncate(p, 0), id="empty"),
    pytest.param(lambda p: os.truncate(p, p.stat().st_size // 2), id="truncated"),
    pytest.param(lambda p: _flip(p, offset=12), id="header"),
    pytest.param(lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 'O'}   \n"), id="object-header"),
])
@pytest.mark.parametrize("name", ["shard-00000.npy", "norms-00000.npy"])
def test_unverified_read_of_a_damaged_file_is_a_message(fresh, damage, name):
    """Opened without verification (search, FAISS builds): np.load errors become DatablameError."""
    _, _, _, store = fresh
    damage(store / name)
    s = open_store(store)
    with pytest.raises(DatablameError, match=name.replace(".", r"\.")):
        list(s.iter_shards())


def test_reindex_recomputes_only_the_damaged_shard(fresh, run):
    cfg, cfg_path, _, store = fresh
    _flip(store / "shard-00001.npy")
    with pytest.raises(DatablameError, match="shard-00001.npy"):
        open_store(store, verify="cached")
    again = api.index(cfg, faiss="none", progress=False, text_indices=False)
    assert again["shards_computed"] == 1
    assert open_store(store, verify="cached").verify(cached=True) == 0  # the rebuilt shard is primed
    assert isinstance(open_store(store), FeatureStore)


def test_read_only_store_still_verifies(fresh, tmp_path):
    _, _, _, store = fresh
    (store / VERIFIED).unlink()
    os.chmod(store, 0o555)
    try:
        n = len(json.loads((store / "manifest.json").read_text())["shards"])
        assert open_store(store).verify(cached=True) == 2 * n  # nothing cached, nothing raised
    finally:
        os.chmod(store, 0o755)
    assert not (store / VERIFIED).exists() or os.geteuid() == 0


def test_scores_from_a_verified_store_are_unchanged(fresh):
    cfg, _, run_dir, _ = fresh
    before = np.load(run_dir / "attribution" / "scores.npz")["grad_cosine"]
    inputs, _ = api.prepare_inputs(cfg)
    from datablame.methods import get_method

    np.testing.assert_array_equal(get_method("grad_cosine").score(inputs), before)
