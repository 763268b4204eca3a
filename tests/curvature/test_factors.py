"""K-FAC / EKFAC / diagonal factors in the projected space: exact against direct computation."""

from __future__ import annotations

import pytest
import torch
from influence_inputs import random_rows, tiny_inputs

from datablame.config import ModuleSelection, ProjectionConfig
from datablame.curvature import (
    DiagonalPreconditioner,
    EkfacPreconditioner,
    KfacPreconditioner,
    collect_kronecker_stats,
    load_preconditioner,
)
from datablame.curvature.covariance import sample_labels
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.models.tokenize import IGNORE, pad_batch, per_row_loss

MLP = ModuleSelection()
EXACT = ProjectionConfig(k_in=None, k_out=None)


def close(x: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal up to float32 accumulation error, relative to the largest entry."""
    torch.testing.assert_close(x.double(), ref.double(), rtol=rtol, atol=rtol * float(ref.abs().max()))


def direct_stats(model, modules, encoded):
    """Reference: one row at a time (no padding), inputs and output gradients from autograd."""
    a_sum = {n: 0.0 for n, _ in modules}
    s_sum = {n: 0.0 for n, _ in modules}
    grads = []
    tokens = 0
    for i in range(len(encoded)):
        b = pad_batch([encoded.input_ids[i]], [encoded.labels[i]], 0)
        seen = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, n=n, seen=seen: seen.__setitem__(n, (inp[0], out))) for n, m in modules]
        try:
            with torch.enable_grad():
                for p in model.parameters():
                    p.requires_grad_(True)
                loss = per_row_loss(model(input_ids=b["input_ids"]).logits, b["labels"]).sum()
                outs = torch.autograd.grad(loss, [seen[n][1] for n, _ in modules] + [m.weight for _, m in modules])
        finally:
            for h in hooks:
                h.remove()
        k = len(modules)
        for (n, _), g in zip(modules, outs[:k], strict=True):
            a = seen[n][0][0].detach().double()
            g = g[0].double()
            a_sum[n] = a_sum[n] + a.T @ a
            s_sum[n] = s_sum[n] + g.T @ g
        grads.append(torch.cat([w.flatten() for w in outs[k:]]))
        tokens += len(encoded.input_ids[i])
    return {n: (a_sum[n] / tokens, s_sum[n] / tokens) for n, _ in modules}, torch.stack(grads), tokens


@pytest.fixture
def setup(tiny_llama):
    modules = select_modules(tiny_llama, MLP)
    rows = random_rows(7, seed=3)
    return tiny_llama, modules, rows


def test_covariances_equal_direct_computation(setup):
    model, modules, rows = setup
    feat = GradientFeaturizer(model, modules, FactoredProjection(EXACT))
    stats, feats, _ = collect_kronecker_stats(feat, rows, batch_size=3, desc=False)  # padding inside batches
    ref, ref_grads, tokens = direct_stats(model, modules, rows)
    assert stats.n_tokens == tokens and stats.n_rows == len(rows)
    covs = stats.covariances()
    for n, _ in modules:
        close(covs[n][0], ref[n][0])
        close(covs[n][1], ref[n][1])
    close(feats, ref_grads)


def test_projected_covariances_are_projections_of_the_exact_ones(setup):
    model, modules, rows = setup
    proj = FactoredProjection(ProjectionConfig(k_in=8, k_out=5, seed=2))
    stats, _, _ = collect_kronecker_stats(GradientFeaturizer(model, modules, proj), rows, batch_size=4, desc=False)
    exact, _, _ = collect_kronecker_stats(GradientFeaturizer(model, modules, FactoredProjection(EXACT)), rows, batch_size=4, desc=False)
    for n, m in modules:
        p_in, p_out = (x.double() for x in proj.matrices(n, m.in_features, m.out_features))
        a, s = stats.covariances()[n]
        a0, s0 = exact.covariances()[n]
        assert a.shape == (8, 8) and s.shape == (5, 5)
        close(a, p_in @ a0 @ p_in.T)
        close(s, p_out @ s0 @ p_out.T)


def test_ekfac_lambda_is_mean_squared_rotated_row_gradient(setup):
    model, modules, rows = setup
    feat = GradientFeaturizer(model, modules, FactoredProjection(EXACT))
    stats, feats, _ = collect_kronecker_stats(feat, rows, batch_size=4, desc=False)
    pre = EkfacPreconditioner.fit(stats, feats, feat.shapes)
    _, ref_grads, _ = direct_stats(model, modules, rows)
    start = 0
    for n, o, i in feat.shapes:
        g = ref_grads[:, start : start + o * i].reshape(-1, o, i).double()
        start += o * i
        qa, qs = pre.tensors[n]["a_eigvecs"], pre.tensors[n]["s_eigvecs"]
        close(pre.tensors[n]["lambda"], (qs.T @ g @ qa).square().mean(0), rtol=1e-3)


def _dense_solve(f: torch.Tensor, v: torch.Tensor, lam: float) -> torch.Tensor:
    return torch.linalg.solve(f + lam * torch.eye(len(f), dtype=f.dtype), v.T).T


@pytest.mark.parametrize("kind", ["kfac", "ekfac", "diagonal"])
def test_precondition_equals_dense_solve(setup, kind):
    """(F + λI)⁻¹ v from the factored form equals a dense solve with F built explicitly."""
    model, _, rows = setup
    modules = select_modules(model, ModuleSelection(pattern=r"layers\.1\.mlp\.down_proj$"))
    feat = GradientFeaturizer(model, modules, FactoredProjection(ProjectionConfig(k_in=12, k_out=6, seed=1)))
    stats, feats, _ = collect_kronecker_stats(feat, rows, batch_size=4, desc=False)
    name, o, i = feat.shapes[0]
    if kind == "diagonal":
        pre = DiagonalPreconditioner.fit(feats, feat.shapes)
        f = torch.diag(feats.double().square().mean(0))
    else:
        pre = (KfacPreconditioner.fit(stats, feat.shapes) if kind == "kfac" else EkfacPreconditioner.fit(stats, feats, feat.shapes))
        a, s = stats.covariances()[name]
        if kind == "kfac":
            f = stats.tokens_per_row * torch.kron(s, a)  # row-major vec(G): (S ⊗ A) vec(G) = vec(S G A)
        else:
            q = torch.kron(pre.tensors[name]["s_eigvecs"], pre.tensors[name]["a_eigvecs"])
            f = q @ torch.diag(pre.tensors[name]["lambda"].reshape(-1)) @ q.T
    v = torch.randn(3, o * i, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = pre.damping_for(name, None)
    assert lam == pytest.approx(0.1 * float(pre.tensors[name]["lambda"].mean()))
    torch.testing.assert_close(pre.precondition(v), _dense_solve(f, v, lam), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(pre.precondition(v, damping=0.3), _dense_solve(f, v, 0.3), rtol=1e-6, atol=1e-8)
    scores = pre.scores(v[:2], feats)
    torch.testing.assert_close(scores, _dense_solve(f, v[:2], lam) @ feats.double().T, rtol=1e-6, atol=1e-8)


def test_kfac_eigenvalues_scale_with_tokens_per_row(setup):
    model, modules, rows = setup
    feat = GradientFeaturizer(model, modules, FactoredProjection(ProjectionConfig(k_in=6, k_out=6)))
    stats, _, _ = collect_kronecker_stats(feat, rows, batch_size=4, desc=False)
    pre = KfacPreconditioner.fit(stats, feat.shapes)
    n = feat.shapes[0][0]
    t = pre.tensors[n]
    torch.testing.assert_close(t["lambda"], stats.tokens_per_row * torch.outer(t["s_eigvals"], t["a_eigvals"]))
    assert pre.meta["n_tokens"] == sum(len(x) for x in rows.input_ids)


def test_true_fisher_samples_labels_only_at_loss_positions(tiny_llama):
    rows = random_rows(5, seed=4)
    sampled = sample_labels(tiny_llama, rows, batch_size=2, pad_id=0, seed=0)
    again = sample_labels(tiny_llama, rows, batch_size=2, pad_id=0, seed=0)
    changed = 0
    for orig, new in zip(rows.labels, sampled.labels, strict=True):
        assert [x == IGNORE for x in orig] == [x == IGNORE for x in new]
        changed += sum(a != b for a, b in zip(orig, new, strict=True))
    assert changed > 0  # a random model rarely predicts the given tokens
    assert sampled.input_ids == rows.input_ids
    assert again.labels == sampled.labels  # seeded


def test_save_load_roundtrip(setup, tmp_path):
    model, modules, rows = setup
    feat = GradientFeaturizer(model, modules, FactoredProjection(ProjectionConfig(k_in=6, k_out=4)))
    stats, feats, _ = collect_kronecker_stats(feat, rows, batch_size=4, desc=False)
    pre = EkfacPreconditioner.fit(stats, feats, feat.shapes, meta={"fisher": "empirical"})
    path = pre.save(tmp_path / "curvature" / "ekfac.safetensors", identity={"model": "x"})
    back, identity = load_preconditioner(path)
    assert identity == {"model": "x"} and back.kind == "ekfac" and back.shapes == pre.shapes
    v = torch.randn(2, feats.shape[1], dtype=torch.float64)
    torch.testing.assert_close(back.precondition(v), pre.precondition(v))
    assert not list(tmp_path.glob("curvature/.*partial"))


def test_factors_are_reused_when_identity_matches(tiny_llama, tmp_path, monkeypatch):
    from datablame.features import preconditioner as ic
    from datablame.methods import get_method

    rows, queries = random_rows(6, seed=5), random_rows(2, seed=6)
    m = get_method("ekfac")
    m.fit(tiny_inputs(tiny_llama, rows, queries, k=8, work_dir=tmp_path))
    first = m.score(tiny_inputs(tiny_llama, rows, queries, k=8, work_dir=tmp_path))
    assert (tmp_path / "curvature" / "ekfac.safetensors").is_file()

    def boom(*a, **k):
        raise AssertionError("refitted although saved factors match")

    monkeypatch.setattr(ic, "collect_kronecker_stats", boom)
    again = get_method("ekfac")
    again.fit(tiny_inputs(tiny_llama, rows, queries, k=8, work_dir=tmp_path))
    torch.testing.assert_close(torch.from_numpy(again.score(tiny_inputs(tiny_llama, rows, queries, k=8, work_dir=tmp_path))), torch.from_numpy(first))
    with pytest.raises(AssertionError, match="refitted"):  # another model fingerprint must refit
        get_method("ekfac").fit(tiny_inputs(tiny_llama, rows, queries, k=8, work_dir=tmp_path, fingerprint="other"))
    with pytest.raises(AssertionError, match="refitted"):  # another projection must refit
        get_method("ekfac").fit(tiny_inputs(tiny_llama, rows, queries, k=4, work_dir=tmp_path))


def test_rows_featurized_once_when_fitting(tiny_llama, monkeypatch):
    """The covariance pass hands its row features to gradient_features (no second pass)."""
    from datablame.features.gradients import gradient_features
    from datablame.methods import get_method

    rows, queries = random_rows(6, seed=5), random_rows(2, seed=6)
    inputs = tiny_inputs(tiny_llama, rows, queries, k=8)
    calls = []
    orig = GradientFeaturizer.featurize

    def counting(self, encoded, *a, **k):
        calls.append(len(encoded))
        return orig(self, encoded, *a, **k)

    monkeypatch.setattr(GradientFeaturizer, "featurize", counting)
    m = get_method("ekfac")
    m.fit(inputs)
    m.score(inputs)
    assert sorted(calls) == [len(queries), len(rows)]
    fresh = tiny_inputs(tiny_llama, rows, queries, k=8)
    monkeypatch.setattr(GradientFeaturizer, "featurize", orig)
    torch.testing.assert_close(gradient_features(fresh).rows, gradient_features(inputs).rows, rtol=1e-5, atol=1e-8)
