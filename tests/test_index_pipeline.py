"""`datablame index` + attribute: rows from the store rank like direct computation, and a
store from another model or projection is refused."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_config import small_config

from datablame import api
from datablame.errors import DatablameError


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("indexed"), attribution={"store": {"shard_rows": 16}})
    outcome = api.run(cfg)
    direct = np.load(outcome.run_dir / "attribution" / "scores.npz")["grad_cosine"]
    summary = api.index(cfg, progress=False)
    return cfg, outcome, direct, summary


def test_store_ranking_equals_direct(indexed_run):
    cfg, outcome, direct, summary = indexed_run
    assert summary["rows"] == len(outcome.corpus) and summary["shards"] == -(-len(outcome.corpus) // 16)
    assert summary["faiss"]["recall_at_10"] == 1.0  # flat index is exact
    inputs, _ = api.prepare_inputs(cfg)
    assert inputs.store is not None
    assert np.isfinite(inputs.store_row_losses).all()
    from datablame.features.gradients import gradient_features
    from datablame.store.rows import StoreRows

    assert isinstance(gradient_features(inputs).rows, StoreRows)  # streamed from the shards, never loaded whole
    api.attribute(cfg)
    from_store = np.load(outcome.run_dir / "attribution" / "scores.npz")["grad_cosine"]
    assert not np.array_equal(from_store, direct), "scores must come from the fp16 store"
    np.testing.assert_allclose(from_store, direct, atol=2e-3)
    for q in range(len(direct)):
        assert list(np.argsort(-from_store[q], kind="stable")[:5]) == list(np.argsort(-direct[q], kind="stable")[:5])


def test_rerun_reuses_every_shard(indexed_run):
    cfg, _, _, summary = indexed_run
    again = api.index(cfg, faiss="none", progress=False)
    assert again["shards_computed"] == 0 and again["shards_reused"] == summary["shards"]


def test_store_from_another_model_is_refused(indexed_run):
    cfg, outcome, _, _ = indexed_run
    first_ckpt = sorted((outcome.run_dir / "model").glob("checkpoint-*"))[0]
    other = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"checkpoint": str(first_ckpt)})})
    with pytest.raises(DatablameError, match="datablame index") as err:
        api.attribute(other)
    assert "model" in err.value.problem


def test_store_with_another_projection_is_refused(indexed_run):
    cfg, _, _, _ = indexed_run
    proj = cfg.attribution.projection.model_copy(update={"seed": 99})
    other = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"projection": proj})})
    with pytest.raises(DatablameError, match="projection"):
        api.attribute(other)


SLOW_INDEX = """
import sys, time
from datablame import api
from datablame.config import load_config
real = api.featurize_range
def slow(inputs, start, stop):
    time.sleep(0.5)  # make the build long enough to kill mid-way
    return real(inputs, start, stop)
api.featurize_range = slow
api.index(load_config(sys.argv[1]), faiss="none", progress=False)
"""


def test_killed_index_resumes_with_finished_shards_untouched(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = small_config(tmp_path / "run", attribution={"store": {"shard_rows": 8}})
    api.train(cfg)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    manifest = tmp_path / "run" / "store" / "manifest.json"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INDEX, str(cfg_path)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = json.loads(manifest.read_text())
    assert not done["complete"] and len(done["shards"]) >= 2
    store = manifest.parent
    before = {e["file"]: ((store / e["file"]).stat().st_mtime_ns, e["sha256"]) for e in done["shards"]}
    summary = api.index(cfg, faiss="none", progress=False)
    assert summary["shards_reused"] == len(before) and summary["shards_computed"] == summary["shards"] - len(before)
    after = json.loads(manifest.read_text())
    assert after["complete"]
    for e in after["shards"]:
        if e["file"] in before:
            assert ((store / e["file"]).stat().st_mtime_ns, e["sha256"]) == before[e["file"]]
