"""Token-wise gradient cosine: per-token terms sum to the exact per-row gradient inner
products, planted rows score above the rest (fails if the sign flips), batch size is
irrelevant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from planted_gap import planted_gaps

from datablame.config import ModuleSelection, ProjectionConfig
from datablame.errors import DatablameError
from datablame.features.gradients import gradient_features
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.methods import get_method
from datablame.methods.grad_tokenwise import reduce_cosines, token_terms
from datablame.models.tokenize import pad_batch, per_row_loss


def _exact_weight_grads(model, modules, encoded, i):
    """Autograd reference: d(row i's mean loss)/dW for every selected module, flattened."""
    for p in model.parameters():
        p.requires_grad_(False)
    weights = [m.weight for _, m in modules]
    for w in weights:
        w.requires_grad_(True)
    batch = pad_batch(encoded.input_ids[i : i + 1], encoded.labels[i : i + 1], 0)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    grads = torch.autograd.grad(per_row_loss(logits, batch["labels"]).sum(), weights)
    for w in weights:
        w.requires_grad_(False)
    return torch.cat([g.flatten() for g in grads]).double()


def test_token_terms_sum_to_exact_row_inner_products(tiny_llama, toy_encoded):
    torch.manual_seed(0)
    modules = select_modules(tiny_llama, ModuleSelection())[:4]
    feat = GradientFeaturizer(tiny_llama, modules, FactoredProjection(ProjectionConfig(k_in=None, k_out=None)))
    exact = torch.stack([_exact_weight_grads(tiny_llama, modules, toy_encoded, i) for i in range(len(toy_encoded))])
    queries = exact[[1, 4]].float()  # two rows' gradients stand in for queries
    dots = torch.zeros(len(queries), len(toy_encoded), dtype=torch.float64)
    n_pos = []
    for terms, _, _ in token_terms(feat, toy_encoded, queries, batch_size=4, pad_id=0, desc=False):
        dots[:, terms.rows] = terms.dots.sum(dim=1).T
        n_pos += terms.valid.sum(dim=1).tolist()
    torch.testing.assert_close(dots, queries.double() @ exact.T, rtol=1e-4, atol=1e-7)
    # only real positions that feed a loss token count (the last token predicts nothing)
    lengths = [len(x) for x in toy_encoded.input_ids]
    assert all(0 < n < length for n, length in zip(n_pos, lengths, strict=True)), (n_pos, lengths)


def test_projected_terms_match_grad_dot(planted_run):
    """On the run's own projection, Σ_t <Q, G_t> equals grad_dot and the per-token norms
    make each cosine lie in [-1, 1]."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    from datablame.features.gradients import featurizer_for

    feat = featurizer_for(inputs)
    g = gradient_features(inputs)
    dot = get_method("grad_dot").score(inputs)
    summed = np.zeros_like(dot)
    qn = g.queries.double().norm(dim=1)
    for terms, _, _ in token_terms(feat, inputs.rows, g.queries, batch_size=5, pad_id=inputs.tokenizer.pad_token_id or 0,
                                   desc=False):
        summed[:, terms.rows] = terms.dots.sum(dim=1).T.numpy()
        cos = reduce_cosines(terms, qn, "max", 1)
        assert cos.abs().max() <= 1 + 1e-9
    np.testing.assert_allclose(summed, dot, rtol=1e-4, atol=1e-6 * np.abs(dot).max())


@pytest.mark.parametrize("options", [{}, {"reduce": "topk_mean", "topk": 3}, {"reduce": "mean"},
                                     {"positions": "loss"}])
def test_planted_rows_score_higher(planted_run, options):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    scores = get_method("grad_tokenwise", **options).score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    assert np.all(np.abs(scores) <= 1 + 1e-9)
    gaps = planted_gaps(scores, inputs, truth)
    assert np.mean(gaps) > 0, gaps


def test_reductions_are_ordered_and_batch_size_invariant(planted_run):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    inputs.attribution = inputs.attribution.model_copy(update={"batch_size": 3})
    by3 = {r: get_method("grad_tokenwise", reduce=r, topk=4).score(inputs) for r in ("max", "topk_mean", "mean")}
    inputs2 = make_inputs()
    inputs2.attribution = inputs2.attribution.model_copy(update={"batch_size": 16})
    by16 = get_method("grad_tokenwise").score(inputs2)
    np.testing.assert_allclose(by3["max"], by16, rtol=1e-5, atol=1e-6)
    # max >= mean of the top 4 >= mean of all positions, row by row
    assert np.all(by3["max"] >= by3["topk_mean"] - 1e-9) and np.all(by3["topk_mean"] >= by3["mean"] - 1e-9)
    assert not np.allclose(by3["max"], by3["mean"])
    # the summed features it computed on the way are shared with grad_* methods
    assert inputs2.shared.grads is not None
    np.testing.assert_allclose(get_method("grad_dot").score(inputs2), get_method("grad_dot").score(make_inputs()),
                               rtol=1e-5, atol=1e-7)


def test_bad_options_say_how_to_fix():
    with pytest.raises(DatablameError, match="reduce"):
        get_method("grad_tokenwise", reduce="median")
    with pytest.raises(DatablameError, match="topk"):
        get_method("grad_tokenwise", reduce="topk_mean", topk=0)
    with pytest.raises(DatablameError, match="positions"):
        get_method("grad_tokenwise", positions="prompt")
