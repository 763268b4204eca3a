"""Distributed featurizing (`datablame index --workers N`): ranks write disjoint shard ranges of
one store, rank 0 merges their part files into the manifest; a killed rank's finished shards are
reused on rerun; the store equals the single-process one; more ranks than shards is refused."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from pipeline_config import small_config

from datablame.errors import DatablameError
from datablame.store import build_store, open_store
from datablame.store.distributed import featurize_rank, merge_parts, prepare_store

N, DIM, SHARD = 50, 6, 8  # 7 shards
IDS = [f"r{i}" for i in range(N)]
FEATS = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)


def _kw(world):
    return dict(n_rows=N, row_ids=IDS, identity={"model_fingerprint": "m"}, dim=DIM, shard_size=SHARD, world=world)


def test_killed_rank_resumes_and_store_equals_single_process(tmp_path):
    single = open_store(build_store(tmp_path / "single", featurize=lambda a, b: FEATS[a:b], progress=False,
                                    **{k: v for k, v in _kw(1).items() if k != "world"}).path)
    path = tmp_path / "dist"
    prepare_store(path, **_kw(2))
    featurize_rank(path, lambda a, b: FEATS[a:b], rank=1, world=2)  # rank 1 finishes its range

    calls = []

    def dies_after_one(a, b):
        if calls:
            raise KeyboardInterrupt  # rank 0 is killed during its second shard
        calls.append(a)
        return FEATS[a:b]

    with pytest.raises(KeyboardInterrupt):
        featurize_rank(path, dies_after_one, rank=0, world=2)
    m = prepare_store(path, **_kw(2))  # the rerun: 1 shard of rank 0 and rank 1's 3 are kept
    assert len(m["shards"]) == 4 and not m["complete"]
    done = []
    for rank in (0, 1):
        featurize_rank(path, lambda a, b: (done.append(a), FEATS[a:b])[1], rank=rank, world=2)
    assert len(done) == 3, "only the shards never finished are featurized again"
    assert merge_parts(path)["complete"] and not list(path.glob("parts-rank*.json"))
    dist = open_store(path, verify=True)
    assert dist.row_ids == single.row_ids
    for a, b in zip(dist.shards, single.shards, strict=True):
        assert (a["start"], a["stop"], a["sha256"], a["norms_sha256"]) == (b["start"], b["stop"], b["sha256"], b["norms_sha256"])


def test_more_ranks_than_shards_is_refused(tmp_path):
    with pytest.raises(DatablameError) as err:
        prepare_store(tmp_path / "s", **_kw(8))
    assert "8 workers" in err.value.problem and "7 shards" in err.value.problem and "--workers 7" in err.value.fix


def test_torchrun_two_cpu_ranks_match_single_process(tmp_path):
    """2 gloo ranks under torchrun featurize the planted run's store; rows equal the
    single-process store's bit for bit (same fp16 shard hashes)."""
    from datablame import api
    from datablame.api_distributed import index_distributed

    cfg = small_config(tmp_path / "run", attribution={"store": {"shard_rows": 16}})  # 55 rows: 4 shards
    api.train(cfg)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with pytest.raises(DatablameError, match="5 workers"):
        index_distributed(cfg_path, 5, faiss="none", text_indices=False, progress=False)
    summary = index_distributed(cfg_path, 2, faiss="none", text_indices=False, progress=False, timeout_s=300)
    assert summary["shards"] == 4 and summary["shards_computed"] == 0  # all featurized by the ranks
    store_dir = tmp_path / "run" / "store"
    dist_rows, dist_shards = open_store(store_dir, verify=True).load_all(), open_store(store_dir).shards
    api.index(cfg, faiss="none", text_indices=False, progress=False, overwrite=True)
    single = open_store(store_dir)
    np.testing.assert_allclose(dist_rows, single.load_all(), rtol=0, atol=1e-6)
    assert [e["sha256"] for e in dist_shards] == [e["sha256"] for e in single.shards], "bit-identical shards"


def test_cli_workers_more_than_shards_is_a_clear_message(tmp_path):
    """`datablame index --workers 99` stops before any model is loaded or process launched."""
    from typer.testing import CliRunner

    from datablame.cli import app

    cfg = small_config(tmp_path / "run", attribution={"store": {"shard_rows": 16}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["index", "--config", str(path), "--workers", "99", "--no-text-indices"])
    text = " ".join(res.output.split())
    assert res.exit_code != 0 and "99 workers" in text and "4 shards" in text and "--workers 4" in text, res.output
