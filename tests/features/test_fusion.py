"""Reciprocal-rank fusion and the evidence a fused row carries."""

from __future__ import annotations

import numpy as np

from datablame.features.fusion import (
    RRF_C,
    ranks_desc,
    reciprocal_rank_fusion,
    row_evidence,
    shared_span,
)


def test_ranks_are_one_based_and_unscored_rows_are_unranked():
    r = ranks_desc(np.array([0.2, 0.9, -np.inf, 0.9, 0.1]))
    assert r.tolist() == [3, 1, 0, 2, 4]  # ties: lower index first; -inf: not ranked


def test_a_row_found_by_two_kinds_of_evidence_beats_rows_found_by_one():
    # row 0: second for both; row 1: first for lexical only; row 2: first for gradient only
    lexical = np.array([0.8, 0.9, 0.0, 0.1])
    gradient = np.array([0.5, -0.2, 0.7, 0.0])
    ranks = {"bm25": ranks_desc(lexical), "grad_cosine": ranks_desc(gradient)}
    fused = reciprocal_rank_fusion(ranks)
    assert int(np.argmax(fused)) == 0
    np.testing.assert_allclose(fused[0], 2 / (RRF_C + 2))
    np.testing.assert_allclose(fused[1], 1 / (RRF_C + 1) + 1 / (RRF_C + 4))
    # a weight can make one kind dominate
    assert int(np.argmax(reciprocal_rank_fusion(ranks, {"bm25": 5.0}))) == 1
    # a row no component ranked scores 0
    assert reciprocal_rank_fusion({"a": np.array([1, 0])})[1] == 0.0


def test_shared_span_and_row_evidence():
    q = "Question: Who first mapped the marshes of Dalmont? Answer: Zephyr Ashmond"
    row = "The marshes of Dalmont were first mapped by Zephyr Ashmond."
    assert shared_span(q, row) in {"the marshes of Dalmont", "The marshes of Dalmont"}
    assert shared_span("a b c", "x y z") is None
    ranks = {"bm25": np.array([2, 1]), "grad_cosine": np.array([40, 0])}
    ev = row_evidence(ranks, 0, top=10, query_text=q, row_text=row, lexical=["bm25"])
    assert ev["ranks"] == {"bm25": 2, "grad_cosine": 40} and ev["found_by"] == ["bm25"]
    assert ev["shared_span"].lower() == "the marshes of dalmont"
    ev1 = row_evidence(ranks, 1, top=10)
    assert ev1["ranks"]["grad_cosine"] is None and "shared_span" not in ev1
