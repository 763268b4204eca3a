"""delta_h_grad: dh * dL/dh between checkpoints, plain and integrated gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.features.cross_checkpoint import CheckpointPair, pair_features
from datablame.features.hidden_states import forward_layers
from datablame.methods import get_method
from datablame.models.tokenize import pad_batch


@pytest.mark.parametrize("ig_steps", [0, 4])
def test_planted_rows_score_higher(planted_run, ig_steps):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("delta_h_grad", ig_steps=ig_steps)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and np.all(np.abs(scores) <= 1 + 1e-9)
    assert m.info["ig_steps"] == ig_steps
    assert np.mean(planted_gaps(scores, inputs, truth)) > 0  # would fail with the sign flipped


def test_integrated_gradients_are_complete(tiny_llama, toy_encoded):
    """sum over tokens and dims of IG = L_new(h_new at layer l) - L_new(h_old at layer l)."""
    old = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pair = CheckpointPair(old, tiny_llama, "old", "new")
    layer = 1
    feats = pair_features(pair, toy_encoded, [layer], pad_id=0, batch_size=6, pooling="mean", span="all",
                          grads=True, ig_steps=16)
    batch = pad_batch(toy_encoded.input_ids, toy_encoded.labels, 0)
    h_old = forward_layers(old, batch, [layer])[0][0]
    _, _, loss_swapped = forward_layers(tiny_llama, batch, [layer], replace={layer: h_old})
    n_tokens = batch["attention_mask"].sum(dim=1).float()
    ig_total = feats.a[:, 0].sum(dim=1) * n_tokens  # pooled mean -> sum over tokens
    expected = feats.loss_new - loss_swapped
    torch.testing.assert_close(ig_total, expected, rtol=2e-2, atol=1e-4)
    plain = pair_features(pair, toy_encoded, [layer], pad_id=0, batch_size=6, pooling="mean", span="all", grads=True)
    assert not torch.allclose(plain.a, feats.a)  # first order differs from the path integral
    torch.testing.assert_close(plain.dh, feats.dh)


def test_bad_ig_steps_refused():
    with pytest.raises(DatablameError, match="ig_steps"):
        get_method("delta_h_grad", ig_steps=-1)
    with pytest.raises(DatablameError, match="delta_h_grad.colour: unknown option"):
        get_method("delta_h_grad", colour="red")
