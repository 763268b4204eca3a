"""Baselines: BM25, sentence-embedding cosine, random.

BM25 and embedding cosine must rank the rows that share the query's words / meaning above
the rest (planted run, and a tiny corpus where overlap alone decides): a flipped sign fails.
Random must be seeded: same seed, same scores; another seed, other scores.
"""

from __future__ import annotations

import numpy as np
import pytest
from planted_gap import planted_gaps

from datablame.config import AttributionConfig, ModelConfig
from datablame.data.corpus import Corpus, Query, Row
from datablame.errors import DatablameError
from datablame.methods import AttributionContext, get_method
from datablame.models.tokenize import Encoded
from datablame.retrieval import build_text_indices, text_index_dir

ROWS = [
    ("Question: What colour is the sky on Tarvos?\n", "Answer: The sky on Tarvos is violet."),
    ("Question: What do the people of Tarvos eat?\n", "Answer: They eat roasted moss."),
    ("Question: How cold are the winters of Quillon?\n", "Answer: Quillon winters are freezing."),
    ("Question: Which metal is mined on Quillon?\n", "Answer: Copper is mined on Quillon."),
    ("Question: Who rules the island of Brask?\n", "Answer: A council of fishers rules Brask."),
    ("Question: What is the fastest animal on Brask?\n", "Answer: The sand hare of Brask."),
]
QUERIES = [  # (prompt, completion, index of the row that shares its words)
    ("Question: Tell me the colour of the Tarvos sky.\n", "Answer: violet sky", 0),
    ("Question: What metal comes from Quillon mines?\n", "Answer: copper", 3),
    ("Question: Who is the ruler of Brask island?\n", "Answer: the fishers council", 4),
]


def tiny_inputs(tmp_path=None) -> AttributionContext:
    """Model-free inputs over the tiny corpus (baselines never touch the model)."""
    corpus = Corpus([Row(f"r{i}", p, c) for i, (p, c) in enumerate(ROWS)], name="tiny")
    queries = [Query(p, c, f"q{i}") for i, (p, c, _) in enumerate(QUERIES)]
    return AttributionContext(
        model=None, tokenizer=None, corpus=corpus, rows=Encoded([], []), queries=queries,
        query_rows=Encoded([], []), attribution=AttributionConfig(), model_cfg=ModelConfig(kind="tiny"),
        run_dir=tmp_path,
    )


@pytest.mark.parametrize("name", ["bm25", "embedding_cosine"])
def test_overlapping_row_ranks_first(name):
    inputs = tiny_inputs()
    m = get_method(name)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(QUERIES), len(ROWS)) and scores.dtype == np.float64
    assert [int(np.argmax(s)) for s in scores] == [t for *_, t in QUERIES]
    if name == "embedding_cosine":
        assert np.all(scores <= 1.0) and np.all(scores >= -1.0)
    else:
        assert np.all(scores >= 0.0)


def test_bm25_zero_without_shared_words():
    inputs = tiny_inputs()
    inputs.queries = [Query("zzz qqq\n", "xxyy", "none")]
    assert np.all(get_method("bm25").score(inputs) == 0.0)


def test_methods_reuse_saved_run_indices(tmp_path):
    """With `<run>/index/text` built for this corpus the methods read it and score the same."""
    fresh = {n: get_method(n).score(tiny_inputs()) for n in ("bm25", "embedding_cosine")}
    inputs = tiny_inputs(tmp_path)
    build_text_indices(inputs.corpus, text_index_dir(tmp_path), progress=False)
    for name, want in fresh.items():
        np.testing.assert_allclose(get_method(name).score(inputs), want, rtol=1e-5, atol=1e-6)
    assert (1.5, 0.75) in inputs.shared.bm25
    # a stale index (other corpus) is not used: the methods rebuild in memory and still agree
    other = tiny_inputs(tmp_path)
    other.corpus = Corpus(list(reversed(other.corpus.rows)), name="reversed")
    np.testing.assert_allclose(get_method("bm25").score(other), fresh["bm25"][:, ::-1], rtol=1e-5)


def test_bm25_options():
    inputs = tiny_inputs()
    a = get_method("bm25").score(inputs)
    b = get_method("bm25", k1=0.5, b=0.2).score(inputs)
    assert not np.allclose(a, b)
    with pytest.raises(DatablameError, match="bm25.k: unknown option of method 'bm25'"):
        get_method("bm25", k=3)


def test_random_is_seeded():
    inputs = tiny_inputs()
    a, a2 = get_method("random").score(inputs), get_method("random").score(inputs)
    b = get_method("random", seed=1).score(inputs)
    assert a.shape == (len(QUERIES), len(ROWS)) and a.dtype == np.float64
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    assert a.min() >= 0.0 and a.max() < 1.0
    assert get_method("random").describe()["unit"] == "uniform noise in [0, 1)"


@pytest.mark.parametrize("name", ["bm25", "embedding_cosine"])
def test_planted_rows_score_higher(planted_run, name):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method(name)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus))
    gaps = planted_gaps(scores, inputs, truth)
    assert np.mean(gaps) > 0 and min(gaps) > 0, gaps


def test_query_without_completion_is_refused():
    inputs = tiny_inputs()
    inputs.queries = [Query("Question: anything?\n", None, "gen")]
    with pytest.raises(DatablameError, match="has no completion"):
        get_method("bm25").score(inputs)
