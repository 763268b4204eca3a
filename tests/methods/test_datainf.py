"""DataInf: sign on planted facts, the closed form against a dense computation, damping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datablame.errors import DatablameError
from datablame.features.gradients import gradient_features
from datablame.methods import get_method
from datablame.methods.datainf import block_damping, datainf_block_scores


def test_planted_rows_score_higher(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("datainf")
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    idx = inputs.corpus.index_of()
    for qi, q in enumerate(inputs.queries):
        rel = [idx[r] for r in truth[q.query_id]]
        rest = np.setdiff1d(np.arange(scores.shape[1]), rel)
        assert scores[qi, rel].mean() > scores[qi, rest].mean(), q.query_id


def test_block_scores_equal_the_papers_formula():
    """(1/n) Σ_i (g_i g_iᵀ + λI)⁻¹, each inverse taken densely, with λ = 0.1·mean‖g_i‖²/d."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(9, 14, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 3, 9, dtype=torch.float64)[:, None]
    queries = torch.randn(4, 14, generator=gen, dtype=torch.float64)
    n, d = rows.shape
    lam = 0.1 * float((rows**2).sum(1).mean()) / d
    assert block_damping(rows, 0.1) == pytest.approx(lam)
    inv = sum(torch.linalg.inv(torch.outer(g, g) + lam * torch.eye(d, dtype=torch.float64)) for g in rows) / n
    torch.testing.assert_close(datainf_block_scores(rows, queries, 0.1), queries @ inv @ rows.T, rtol=1e-9, atol=1e-9)


def test_identity_projection_matches_dense_computation(planted_run):
    """Exact per-module gradients (identity projection, one 48x96 module of the planted model):
    the method equals V A Gᵀ with A = (1/(nλ)) Σ_i (I - g_i g_iᵀ / (λ + ‖g_i‖²)) as a dense d x d matrix."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    a = inputs.attribution
    inputs.attribution = a.model_copy(update={
        "modules": a.modules.model_copy(update={"pattern": r"mlp\.down_proj$", "layers": "1"}),
        "projection": a.projection.model_copy(update={"k_in": None, "k_out": None}),
    })
    g = gradient_features(inputs)
    assert g.rows.shape[1] == 48 * 96  # the full weight gradient
    rows, queries = g.rows.double(), g.queries.double()
    n, d = rows.shape
    lam = 0.1 * float((rows**2).sum(1).mean()) / d
    eye = torch.eye(d, dtype=torch.float64)
    c = 1.0 / (lam + (rows**2).sum(1))
    dense = n * eye - (rows.T * c) @ rows  # Σ_i (I - c_i g_i g_iᵀ), formed as a d x d matrix
    expected = (queries @ (dense / (n * lam)) @ rows.T).numpy()
    got = get_method("datainf").score(inputs)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_blocks_add_up_and_damping_scale(planted_run):
    """Default features: the score is the sum of per-module block scores, each with its own λ_l."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    g = gradient_features(inputs)
    per_block = [datainf_block_scores(r.flatten(1), q.flatten(1), 0.1) for r, q in zip(g.blocks(g.rows), g.blocks(g.queries), strict=True)]
    lams = [block_damping(r.flatten(1), 0.1) for r in g.blocks(g.rows)]
    assert len(set(np.round(np.log10(lams), 6))) > 1  # per-layer damping, not one global value
    got = get_method("datainf", query_chunk=2).score(inputs)  # chunked queries: same numbers
    np.testing.assert_allclose(got, sum(per_block).numpy(), rtol=1e-6)
    # large damping: the correction term vanishes, DataInf -> Σ_l (v_l·g_l) / λ_l
    big = get_method("datainf", lambda_scale=1e7).score(inputs)
    limit = sum((q.flatten(1).double() @ r.flatten(1).double().T) / block_damping(r.flatten(1), 1e7)
                for r, q in zip(g.blocks(g.rows), g.blocks(g.queries), strict=True))
    np.testing.assert_allclose(big, limit.numpy(), rtol=1e-3, atol=1e-3 * float(limit.abs().max()))
    with pytest.raises(DatablameError, match="lambda_scale"):
        get_method("datainf", lambda_scale=0)
