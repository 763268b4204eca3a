"""TRAK: sign on planted facts, the kernel solve, the ensemble formula, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.features.checkpoints import checkpoint_features, select_checkpoints
from datablame.methods import get_method
from datablame.methods.trak import dense_projection, kernel_scores


@pytest.mark.parametrize("output", ["margin", "logprob"])
def test_planted_rows_score_higher(planted_run, output):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("trak", checkpoints=2, output=output)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    gaps = planted_gaps(scores, inputs, truth)
    assert min(gaps) > 0, gaps


@pytest.mark.parametrize(("n", "d"), [(7, 20), (30, 6)])
def test_kernel_scores_equal_the_direct_formula(n, d):
    """Both solve spaces (n x n when n <= D, D x D otherwise) give φ_q (ΦᵀΦ + λI)⁻¹ φ_rᵀ."""
    gen = torch.Generator().manual_seed(0)
    rows, queries = torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randn(3, d, generator=gen, dtype=torch.float64)
    damping = 0.05
    lam = damping * float((rows * rows).sum()) / min(n, d)
    direct = queries @ torch.linalg.solve(rows.T @ rows + lam * torch.eye(d, dtype=torch.float64), rows.T)
    torch.testing.assert_close(kernel_scores(rows, queries, damping), direct, rtol=1e-9, atol=1e-12)


def test_kernel_without_damping_is_the_pseudo_inverse():
    gen = torch.Generator().manual_seed(1)
    rows, queries = torch.randn(5, 12, generator=gen, dtype=torch.float64), torch.randn(2, 12, generator=gen, dtype=torch.float64)
    direct = queries @ torch.linalg.pinv(rows.T @ rows) @ rows.T
    torch.testing.assert_close(kernel_scores(rows, queries, 0.0), direct, rtol=1e-7, atol=1e-9)


def test_ensemble_formula(planted_run):
    """mean over models of φ_q K φ_rᵀ, times the mean of Q_r = 1 - exp(-loss_r) (traker's finalize_scores)."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    infos = select_checkpoints(inputs, "all")
    pick = [infos[-3].step, infos[-1].step]
    kernels, qs = [], []
    for info in [i for i in infos if i.step in pick]:
        g = checkpoint_features(inputs, info)
        one_minus_p = 1 - torch.exp(-g.row_losses.double())
        phi_r = -g.rows.double() / one_minus_p[:, None]
        phi_q = -g.queries.double() / (1 - torch.exp(-g.query_losses.double()))[:, None]
        lam = 0.01 * float((phi_r**2).sum()) / min(phi_r.shape)
        # φ_q (ΦᵀΦ + λI)⁻¹ Φᵀ written as φ_q Φᵀ (ΦΦᵀ + λI)⁻¹ (D > n here; the two are equal)
        gram = phi_r @ phi_r.T + lam * torch.eye(len(phi_r), dtype=torch.float64)
        kernels.append(torch.linalg.solve(gram, phi_r @ phi_q.T).T)
        qs.append(one_minus_p)
    expected = (sum(kernels) / 2) * (sum(qs) / 2)[None, :]
    got = get_method("trak", checkpoints=pick).score(inputs)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6, atol=1e-9 * np.abs(got).max())


def test_independent_models_option(planted_run):
    """`models` ensembles over model directories: the final model alone equals checkpoints='last'."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    final = inputs.run_dir / "model" / "final"
    by_models = get_method("trak", models=[str(final)]).score(inputs)
    by_checkpoint = get_method("trak", checkpoints="last").score(make_inputs())
    np.testing.assert_allclose(by_models, by_checkpoint, rtol=1e-9)
    with pytest.raises(DatablameError, match="do not exist"):
        get_method("trak", models=[str(inputs.run_dir / "nope")]).score(inputs)


def test_dense_projection_is_deterministic_and_blockwise():
    x = torch.randn(4, 5000, generator=torch.Generator().manual_seed(2))
    a, b = dense_projection(x, 1024, seed=3), dense_projection(x, 1024, seed=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, dense_projection(x, 1024, seed=4))
    # inner products are kept in expectation: Gram error ~ sqrt(2/k) of its norm
    rel = (a @ a.T - x.double() @ x.double().T).norm() / (x.double() @ x.double().T).norm()
    assert rel < 0.15


def test_deterministic_and_bad_options(planted_run):
    _, make_inputs, _ = planted_run
    a = get_method("trak", checkpoints="last", proj_dim=256).score(make_inputs())
    b = get_method("trak", checkpoints="last", proj_dim=256).score(make_inputs())
    np.testing.assert_array_equal(a, b)
    for bad in [{"output": "loss"}, {"damping": -1.0}, {"proj_dim": 0}]:
        with pytest.raises(DatablameError):
            get_method("trak", **bad)
