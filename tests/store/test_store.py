"""Feature store: layout, fp16 round trip, resume after a kill, identity checks, repair, append."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datablame.errors import DatablameError
from datablame.store import append_rows, build_store, open_store

DIM = 16
IDENT = {"model_fingerprint": "abc123def456abc123", "data_fingerprint": "d1", "projection": {"k": 4}, "modules": ["mlp"]}


def feats(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


class Recorder:
    """featurize(start, stop) over a fixed array; records calls, optionally dies after N calls."""

    def __init__(self, x: np.ndarray, die_after: int | None = None) -> None:
        self.x, self.die_after, self.calls = x, die_after, []

    def __call__(self, start: int, stop: int) -> np.ndarray:
        if self.die_after is not None and len(self.calls) >= self.die_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append((start, stop))
        return torch.from_numpy(self.x[start:stop])  # torch output is accepted too


def ids(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def build(path, x, fn=None, **kw):
    kw = {"identity": IDENT, "dim": DIM, "shard_size": 10, "progress": False, **kw}
    return build_store(path, n_rows=len(x), row_ids=kw.pop("row_ids", ids(len(x))), featurize=fn or Recorder(x), **kw)


def test_layout_and_fp16_round_trip(tmp_path):
    x = feats(25)
    info = build(tmp_path / "s", x, config={"note": "t"})
    assert (info.n_rows, info.n_shards, info.rows_computed, info.shards_reused) == (25, 3, 25, 0)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["complete"] and m["dtype"] == "float16" and m["dim"] == DIM and m["config"] == {"note": "t"}
    assert [(s["start"], s["stop"], s["file"]) for s in m["shards"]] == [
        (0, 10, "shard-00000.npy"), (10, 20, "shard-00001.npy"), (20, 25, "shard-00002.npy")]
    assert np.load(tmp_path / "s" / "shard-00002.npy").dtype == np.float16
    store = open_store(tmp_path / "s", expect_identity=IDENT, verify=True)
    assert store.row_ids == ids(25) and store.identity == IDENT
    np.testing.assert_array_equal(store.load_all(), x.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(store.norms(), np.linalg.norm(x, axis=1), rtol=1e-6)
    starts = [s for s, arr, _ in store.iter_shards() if isinstance(arr, np.memmap)]
    assert starts == [0, 10, 20]


def test_resume_after_kill_skips_finished_shards(tmp_path):
    x, path = feats(50), tmp_path / "s"
    dying = Recorder(x, die_after=2)
    with pytest.raises(KeyboardInterrupt):
        build(path, x, dying)
    assert dying.calls == [(0, 10), (10, 20)]
    (path / ".shard-00002.npy.half.tmp").write_bytes(b"half-written")  # a kill mid-write
    with pytest.raises(DatablameError, match="incomplete.*resume"):
        open_store(path)
    before = {f: ((path / f).stat().st_mtime_ns, (path / f).read_bytes()) for f in ("shard-00000.npy", "shard-00001.npy", "norms-00000.npy")}
    again = Recorder(x)
    info = build(path, x, again)
    assert again.calls == [(20, 30), (30, 40), (40, 50)]
    assert (info.rows_computed, info.shards_reused) == (30, 2)
    assert {f: ((path / f).stat().st_mtime_ns, (path / f).read_bytes()) for f in before} == before
    assert not list(path.glob("*.tmp")) and not list(path.glob(".*.tmp"))
    np.testing.assert_array_equal(open_store(path, verify=True).load_all(), x.astype(np.float16).astype(np.float32))
    third = Recorder(x)
    assert build(path, x, third).rows_computed == 0 and third.calls == []


def test_identity_mismatch_names_the_key(tmp_path):
    x, path = feats(12), tmp_path / "s"
    build(path, x)
    other = {**IDENT, "model_fingerprint": "fff999"}
    with pytest.raises(DatablameError, match=r"another model \(model_fingerprint abc123def456abc1… vs fff999\).*new store path"):
        build(path, x, identity=other)
    with pytest.raises(DatablameError, match=r"another projection \(projection"):
        open_store(path, expect_identity={**IDENT, "projection": {"k": 8}})
    with pytest.raises(DatablameError, match="row 3 is 'r3' in the store vs 'x3'"):
        build(path, x, row_ids=[*ids(3), "x3", *ids(12)[4:]])
    with pytest.raises(DatablameError, match="dim 16, not 8"):
        build_store(path, n_rows=12, row_ids=ids(12), identity=IDENT, featurize=Recorder(x), dim=8, shard_size=10, progress=False)
    fresh = Recorder(x)
    assert build(path, x, fresh, identity=other, overwrite=True).rows_computed == 12
    assert open_store(path).identity["model_fingerprint"] == "fff999"


def test_corrupted_shard_detected_and_repaired(tmp_path):
    x, path = feats(30), tmp_path / "s"
    build(path, x)
    shard = path / "shard-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-3] ^= 0xFF
    shard.write_bytes(bytes(raw))
    open_store(path)  # cheap open does not hash
    with pytest.raises(DatablameError, match=r"shard 1 \(shard-00001.npy, rows 10-20\).*corrupted.*recomputes only that shard"):
        open_store(path, verify=True)
    fix = Recorder(x)
    build(path, x, fix)
    assert fix.calls == [(10, 20)]
    open_store(path, verify=True)


def test_append_rows(tmp_path):
    x, y, path = feats(15), feats(7, seed=1), tmp_path / "s"
    build(path, x)
    rec = Recorder(y)
    info = append_rows(path, ids(7, "new"), rec, identity=IDENT, progress=False)
    assert rec.calls == [(0, 7)] and info.n_rows == 22 and info.shards_reused == 2
    store = open_store(path, verify=True)
    assert store.row_ids == ids(15) + ids(7, "new")
    np.testing.assert_array_equal(store.load_all(), np.concatenate([x, y]).astype(np.float16).astype(np.float32))
    with pytest.raises(DatablameError, match="'new3' is already in the store"):
        append_rows(path, ["zz", "new3"], Recorder(y), identity=IDENT, progress=False)
    with pytest.raises(DatablameError, match="more than once"):
        append_rows(path, ["a", "a"], Recorder(y), identity=IDENT, progress=False)
    with pytest.raises(DatablameError, match="another data version"):
        append_rows(path, ["q"], Recorder(y), identity={**IDENT, "data_fingerprint": "d2"}, progress=False)
    (path / "norms-00000.npy").write_bytes(b"broken")
    with pytest.raises(DatablameError, match=r"shard 0 .*corrupted.*rerun build_store"):
        append_rows(path, ["q"], Recorder(y), identity=IDENT, progress=False)
    assert open_store(path).n_rows == 22  # refused before touching the manifest


def test_interrupted_append_resumes(tmp_path):
    x, y, path = feats(10), feats(25, seed=2), tmp_path / "s"
    build(path, x)
    with pytest.raises(KeyboardInterrupt):
        append_rows(path, ids(25, "n"), Recorder(y, die_after=1), identity=IDENT, progress=False)
    rec = Recorder(y)
    append_rows(path, ids(25, "n"), rec, identity=IDENT, progress=False)
    assert rec.calls == [(10, 20), (20, 25)]
    np.testing.assert_array_equal(open_store(path).load_all()[10:], y.astype(np.float16).astype(np.float32))


def test_bad_inputs_get_one_clear_error(tmp_path):
    with pytest.raises(DatablameError, match="no feature store.*datablame index"):
        open_store(tmp_path / "nowhere")
    with pytest.raises(DatablameError, match="no feature store.*datablame index"):
        append_rows(tmp_path / "nowhere", ["a"], Recorder(feats(1)), identity=IDENT)
    x = feats(5)
    with pytest.raises(DatablameError, match="more than once"):
        build(tmp_path / "s", x, row_ids=["a", "b", "a", "c", "d"])
    with pytest.raises(DatablameError, match=r"returned shape \(4, 16\)"):
        build(tmp_path / "s", x, lambda s, e: x[s : e - 1])
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(DatablameError, match="NaN/inf for row 'r3'"):
        build(tmp_path / "s", x, lambda s, e: bad[s:e])
    with pytest.raises(DatablameError, match="float16 range"):
        build(tmp_path / "s", x, lambda s, e: x[s:e] * 1e6)
