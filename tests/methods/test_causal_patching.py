"""Gated causal patching: sign, the batched patch against a plain forward, options."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.features.hidden_states import forward_layers
from datablame.methods import get_method
from datablame.methods.causal_patching import _QueryPatcher, target_margin, top_p_gates
from datablame.models.tokenize import pad_batch


@pytest.mark.parametrize("options", [{}, {"mode": "additive"}, {"direction": "new_to_old"}])
def test_planted_rows_score_higher(planted_run, options):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("causal_patching", **options)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and np.isfinite(scores).all()
    assert np.mean(planted_gaps(scores, inputs, truth)) > 0  # would fail with the sign flipped


def _query(toy_encoded):
    return toy_encoded.input_ids[4], toy_encoded.labels[4]


def test_batched_patch_equals_a_plain_patched_forward(tiny_llama, toy_encoded):
    old = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids, labels = _query(toy_encoded)
    batch = pad_batch([ids], [labels], 0)
    layer = 1
    h_new = forward_layers(tiny_llama, batch, [layer])[0][0]
    h_old = forward_layers(old, batch, [layer])[0][0]
    gates = (torch.rand(5, 32, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    gates[0] = 1.0  # everything patched
    patcher = _QueryPatcher(old, ids, labels, 0)
    got = patcher.margins(layer, h_new, gates)
    patcher.expand = False  # the fallback path: the query repeated once per gate
    torch.testing.assert_close(patcher.margins(layer, h_new, gates), got, rtol=1e-5, atol=1e-5)
    lab = batch["labels"][0]
    pred = (lab[1:] != -100).nonzero().flatten()
    for i in range(len(gates)):  # reference: replace the layer output outright, full logits
        patched = h_old + gates[i] * (h_new - h_old)
        with torch.no_grad():
            from datablame.features.hidden_states import layer_hooks

            with layer_hooks(old, [layer], lambda _l, _h, p=patched: p):
                logits = old(input_ids=batch["input_ids"]).logits
        ref = target_margin(logits[:, pred], lab[1:][pred])
        torch.testing.assert_close(got[i : i + 1], ref, rtol=1e-5, atol=1e-5)
    assert patcher.margins(None, None, None).shape == (1,)


def test_gates_pick_the_dimensions_that_lowered_the_loss():
    a = torch.tensor([[-3.0, 1.0, -1.0, 5.0], [2.0, 1.0, 0.5, 0.0]])
    g = top_p_gates(a, 50)
    assert g.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0]]  # a >= 0: never gated
    assert top_p_gates(a, 1).sum(dim=1).tolist() == [1, 0]


def test_target_margin():
    logits = torch.tensor([[[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]]])
    assert target_margin(logits, torch.tensor([0, 2])).tolist() == [pytest.approx((1.0 - 2.0) / 2)]


def test_bad_options_refused():
    for opts, match in [({"top_p": 0}, "top_p"), ({"mode": "fast"}, "mode"), ({"direction": "up"}, "direction")]:
        with pytest.raises(DatablameError, match=match):
            get_method("causal_patching", **opts)
