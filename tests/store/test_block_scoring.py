"""Store-backed scoring streams blocks of rows from the memory-mapped shards: the block size
changes no score, and no method loads the whole store (`FeatureStore.load_all`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pipeline_config import small_config

from datablame import api
from datablame.features.gradients import gradient_features
from datablame.methods import get_method
from datablame.store import build_store, open_store
from datablame.store.reader import FeatureStore
from datablame.store.rows import StoreRows, dot_scores, row_blocks


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    feats = np.random.default_rng(0).standard_normal((41, 12)).astype(np.float32)
    path = tmp_path_factory.mktemp("blocks") / "store"
    build_store(path, n_rows=41, row_ids=[f"r{i}" for i in range(41)], identity={"m": 1},
                featurize=lambda a, b: feats[a:b], dim=12, shard_size=10, progress=False)
    return open_store(path)


def test_store_rows_read_like_load_all(small_store):
    full = torch.from_numpy(small_store.load_all(np.float32))
    rows = StoreRows(small_store, block_rows=4)
    assert len(rows) == 41 and rows.shape == (41, 12) and rows.nbytes == 0
    torch.testing.assert_close(rows.materialize(), full, rtol=0, atol=0)
    torch.testing.assert_close(rows[7:23], full[7:23], rtol=0, atol=0)  # across shard bounds
    idx = torch.tensor([40, 0, 9, 10, 10, 33])
    torch.testing.assert_close(rows[idx], full[idx], rtol=0, atol=0)
    torch.testing.assert_close(rows[np.array([-1])], full[[-1]], rtol=0, atol=0)
    torch.testing.assert_close(rows[5], full[5], rtol=0, atol=0)
    assert [s for s, _ in row_blocks(rows)] == list(range(0, 41, 4))
    with pytest.raises(IndexError):
        rows[torch.tensor([41])]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("block", [1, 3, 10, 41, 1000])
def test_dot_scores_do_not_depend_on_the_block(small_store, normalize, block):
    full = torch.from_numpy(small_store.load_all(np.float32))
    q = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    qd, rd = q.double(), full.double()
    if normalize:
        qd, rd = torch.nn.functional.normalize(qd, dim=1), torch.nn.functional.normalize(rd, dim=1)
    want = (qd @ rd.T).numpy()
    got = dot_scores(q, StoreRows(small_store, block_rows=block), normalize=normalize)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dot_scores(q, full, normalize=normalize, block_rows=block), want, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    cfg = small_config(tmp_path_factory.mktemp("blockrun"), attribution={"store": {"shard_rows": 16}})
    api.train(cfg)
    api.index(cfg, faiss="none", progress=False, text_indices=False)
    return cfg


# (method, options, tolerance): datainf keeps float32 matrix products, so its block sums
# differ in float32 rounding only
METHODS = [
    ("grad_dot", {}, 1e-10), ("grad_cosine", {}, 1e-10),
    ("ekfac", {"reuse": False}, 1e-10), ("kfac", {"reuse": False}, 1e-10),
    ("diag_influence", {"reuse": False}, 1e-10), ("ekfac", {"reuse": False, "normalize": True}, 1e-10),
    ("diag_influence", {"reuse": False, "normalize": True}, 1e-10),
    ("tracin", {}, 1e-10), ("datainf", {}, 1e-6),
]


@pytest.mark.parametrize(("name", "options", "tol"), METHODS, ids=[f"{m}{'-norm' if o.get('normalize') else ''}" for m, o, _ in METHODS])
def test_block_size_changes_no_method_score(indexed, monkeypatch, name, options, tol):
    def refuse(*a, **k):
        raise AssertionError("the store must be streamed, not loaded whole")

    monkeypatch.setattr(FeatureStore, "load_all", refuse)
    out = {}
    for block in (3, 10**6):
        inputs, _ = api.prepare_inputs(indexed)
        rows = gradient_features(inputs).rows
        assert isinstance(rows, StoreRows)
        rows.block_rows = block
        method = get_method(name, **options)
        method.fit(inputs)
        out[block] = np.asarray(method.score(inputs), dtype=np.float64)
    small, whole = out[3], out[10**6]
    assert np.abs(small - whole).max() <= tol * np.abs(whole).max()
