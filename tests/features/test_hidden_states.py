"""Hidden-state capture, pooling and layer aggregation against plain torch/transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datablame.errors import DatablameError
from datablame.features.hidden_states import (
    decoder_layers,
    forward_layers,
    layer_features,
    pool,
    resolve_layers,
    span_mask,
)
from datablame.features.layer_aggregation import LayerAggregation, fit_convex_weights
from datablame.models.tokenize import IGNORE, pad_batch, per_row_loss


def _batch(enc, n=4):
    return pad_batch(enc.input_ids[:n], enc.labels[:n], 0)


def test_captured_states_are_the_decoder_layer_outputs(tiny_llama, toy_encoded):
    batch = _batch(toy_encoded)
    with torch.no_grad():
        ref = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    hs, gs, losses = forward_layers(tiny_llama, batch, [0, 1])
    # hidden_states[0] is the embedding output; [l + 1] the output of layer l (last one is normed)
    for layer, h in zip([0, 1], hs, strict=True):
        torch.testing.assert_close(h, ref.hidden_states[layer + 1])
    assert gs is None
    torch.testing.assert_close(losses, per_row_loss(ref.logits, batch["labels"]))


def test_activation_gradients_match_autograd(tiny_llama, toy_encoded):
    batch = _batch(toy_encoded)
    _, gs, _ = forward_layers(tiny_llama, batch, [1], grads=True)
    out = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    h = out.hidden_states[2]
    losses = per_row_loss(out.logits, batch["labels"])
    # row 2's own loss only: rows of a batch must not leak into each other's gradients
    (g_row,) = torch.autograd.grad(losses[2], h)
    torch.testing.assert_close(gs[0][2], g_row[2])
    assert gs[0][2].abs().sum() > 0 and tiny_llama.model.layers[0].mlp.up_proj.weight.grad is None


def test_span_mask_and_pooling():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE], [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]])
    attn = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    m = span_mask(labels, attn, "answer")
    # positions 1 and 2 predict the loss tokens at 2 and 3; a row without loss falls back to its tokens
    assert m.tolist() == [[0, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert span_mask(labels, attn, "all").tolist() == attn.float().tolist()
    x = torch.arange(10, dtype=torch.float32).view(2, 5, 1).expand(2, 5, 2)
    assert pool(x, m, "mean")[:, 0].tolist() == [1.5, 6.0]
    assert pool(x, m, "last")[:, 0].tolist() == [2.0, 7.0]


def test_layer_features_shapes_and_determinism(tiny_llama, toy_encoded):
    a = layer_features(tiny_llama, toy_encoded, [0, 2], pad_id=0, batch_size=4, grads=True)
    b = layer_features(tiny_llama, toy_encoded, [0, 2], pad_id=0, batch_size=3, grads=True)
    assert a.h.shape == a.g.shape == (6, 2, 32) and a.losses.shape == (6,)
    torch.testing.assert_close(a.h, b.h, rtol=1e-5, atol=1e-6)  # batching (padding) does not matter
    torch.testing.assert_close(a.g, b.g, rtol=1e-4, atol=1e-7)


def test_resolve_layers():
    assert resolve_layers(None, 4, "m") == [2]
    assert resolve_layers("all", 3, "m") == [0, 1, 2]
    assert resolve_layers(-1, 4, "m") == [3]
    assert resolve_layers("1-2", 4, "m") == [1, 2] and resolve_layers("0,-1", 4, "m") == [0, 3]
    with pytest.raises(DatablameError, match="layer 7 does not exist"):
        resolve_layers(7, 4, "m")
    with pytest.raises(DatablameError, match="cannot read"):
        resolve_layers("x", 4, "m")


def test_decoder_layers_finds_llama_blocks(tiny_llama):
    assert len(decoder_layers(tiny_llama)) == 3


def test_aggregation_mean_topk_weights():
    per_layer = np.array([[[1.0, 0.0]], [[3.0, 2.0]], [[2.0, 4.0]]])  # [L=3, Q=1, R=2]
    mean, info = LayerAggregation("mean").combine(per_layer)
    np.testing.assert_allclose(mean, [[2.0, 2.0]])
    top, _ = LayerAggregation("topk", top_k=2).combine(per_layer)
    np.testing.assert_allclose(top, [[2.5, 3.0]])
    fixed, info = LayerAggregation(layer_weights=[0, 1, 1]).combine(per_layer)
    np.testing.assert_allclose(fixed, [[2.5, 3.0]])
    assert info["weights"] == [0.0, 0.5, 0.5]
    with pytest.raises(DatablameError, match="not convex"):
        LayerAggregation(layer_weights=[-1, 2])
    with pytest.raises(DatablameError, match="aggregate"):
        LayerAggregation("max")


def test_learned_weights_find_the_informative_layer():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(5, 40))
    noise = rng.normal(size=(3, 5, 40))
    per_layer = noise.copy()
    per_layer[1] = reference + 0.1 * noise[1]  # only layer 1 agrees with the reference
    w = fit_convex_weights(per_layer, reference)
    assert w.shape == (3,) and abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
    assert w[1] > 0.8, w
