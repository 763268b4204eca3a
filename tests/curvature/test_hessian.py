"""Explicit Hessian and conjugate gradient: exact against brute-force autograd and solves."""

from __future__ import annotations

import pytest
import torch
from influence_inputs import random_rows, tiny_inputs

from datablame.curvature.hessian import conjugate_gradient, explicit_hessian, hvp, solve_damped
from datablame.errors import DatablameError
from datablame.methods import get_method
from datablame.models.tokenize import pad_batch, per_row_loss

K_PROJ = r"layers\.0\.self_attn\.k_proj$"  # 8 x 16 = 128 weights in the micro Llama


@pytest.fixture
def micro_llama():
    """Smaller than conftest's micro_llama: explicit Hessians cost ~p double-backward passes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def _closures(model, rows, bs=3):
    n = len(rows)
    batches = [pad_batch(rows.input_ids[s : s + bs], rows.labels[s : s + bs], 0) for s in range(0, n, bs)]
    return [
        (lambda b=b: per_row_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).sum() / n)
        for b in batches
    ]


def test_explicit_hessian_equals_autograd_functional(micro_llama):
    rows = random_rows(5, seed=2)
    w = micro_llama.model.layers[0].self_attn.k_proj.weight
    for p in micro_llama.parameters():
        p.requires_grad_(p is w)
    h = explicit_hessian(_closures(micro_llama, rows), [w], chunk=100)

    def loss_of(flat):
        from torch.func import functional_call

        name = "model.layers.0.self_attn.k_proj.weight"
        total = 0
        for b in [pad_batch(rows.input_ids, rows.labels, 0)]:
            logits = functional_call(micro_llama, {name: flat.view_as(w)}, (b["input_ids"],), {"attention_mask": b["attention_mask"]}).logits
            total = total + per_row_loss(logits, b["labels"]).mean()
        return total

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        ref = torch.autograd.functional.hessian(loss_of, w.detach().flatten().clone(), vectorize=True)
    torch.testing.assert_close(h, ref.double(), rtol=1e-3, atol=1e-6)
    v = torch.randn(3, w.numel())
    torch.testing.assert_close(hvp(_closures(micro_llama, rows, bs=2), [w], v), (h @ v.double().T).T, rtol=1e-3, atol=1e-6)


def test_solvers_match_dense_solve():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 30, dtype=torch.float64, generator=g)
    h = m @ m.T / 30
    b = torch.randn(4, 30, dtype=torch.float64, generator=g)
    ref = torch.linalg.solve(h + 0.05 * torch.eye(30, dtype=torch.float64), b.T).T
    x, info = solve_damped(h, b, 0.05)
    torch.testing.assert_close(x, ref)
    assert info.negative_eigenvalues == 0
    y, cg = conjugate_gradient(lambda v: v @ h, b, 0.05, tol=1e-12, max_iter=200)
    torch.testing.assert_close(y, ref, rtol=1e-8, atol=1e-10)
    assert cg.iterations <= 60


def test_cg_refuses_indefinite_systems():
    h = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    with pytest.raises(DatablameError, match="damping"):
        conjugate_gradient(lambda v: v @ h, torch.ones(1, 3, dtype=torch.float64), 0.5)


def test_hessian_influence_equals_brute_force_and_cg_agrees(micro_llama):
    rows, queries = random_rows(6, seed=7), random_rows(2, seed=8)
    inputs = tiny_inputs(micro_llama, rows, queries, pattern=K_PROJ)
    w = micro_llama.model.layers[0].self_attn.k_proj.weight
    # a random model is not at a minimum: damp past the most negative eigenvalue so that
    # H + λI is well conditioned (and positive definite for CG)
    probe = get_method("hessian_influence", solver="explicit")
    probe.fit(inputs)
    assert probe.info["params"] == 128 and probe.info["solver"] == "explicit"
    lam = 2 * max(0.0, -probe.info["min_eigenvalue"]) + probe.info["damping"]
    s_exp = get_method("hessian_influence", solver="explicit", damping=lam).score(inputs)

    # brute force: Hessian of the mean loss by autograd, per-row gradients one row at a time
    flags = [(p, p.requires_grad) for p in micro_llama.parameters()]
    for p in micro_llama.parameters():
        p.requires_grad_(p is w)
    h = explicit_hessian(_closures(micro_llama, rows, bs=6), [w])

    def grad_of(enc, i):
        b = pad_batch([enc.input_ids[i]], [enc.labels[i]], 0)
        loss = per_row_loss(micro_llama(input_ids=b["input_ids"]).logits, b["labels"]).sum()
        return torch.autograd.grad(loss, [w])[0].flatten().double()

    g_r = torch.stack([grad_of(rows, i) for i in range(len(rows))])
    g_q = torch.stack([grad_of(queries, i) for i in range(len(queries))])
    for p, f in flags:
        p.requires_grad_(f)
    ref = g_q @ torch.linalg.solve(h + lam * torch.eye(len(h), dtype=torch.float64), g_r.T)
    torch.testing.assert_close(torch.from_numpy(s_exp), ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    assert probe.info["damping"] == pytest.approx(0.1 * float(torch.trace(h)) / len(h), rel=1e-4)  # the heuristic

    # CG on the same system agrees with the explicit solve
    s_cg = get_method("hessian_influence", solver="cg", damping=lam, cg_tol=1e-10, cg_max_iter=300).score(inputs)
    torch.testing.assert_close(torch.from_numpy(s_cg), torch.from_numpy(s_exp), rtol=1e-5, atol=1e-8 * float(ref.abs().max()))


def test_too_many_parameters_is_a_clear_error(micro_llama):
    inputs = tiny_inputs(micro_llama, random_rows(3), random_rows(1))  # all MLP weights: 2304
    with pytest.raises(DatablameError, match="hessian_influence.pattern"):
        get_method("hessian_influence", max_params=1000).fit(inputs)
    with pytest.raises(DatablameError, match="solver"):
        get_method("hessian_influence", solver="lissa")
