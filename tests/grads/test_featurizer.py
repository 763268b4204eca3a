import numpy as np
import pytest
import torch

from datablame.config import ModuleSelection, ProjectionConfig
from datablame.grads import FactoredProjection, featurize_rows, select_modules
from datablame.models.tokenize import pad_batch, per_row_loss

EXACT = ProjectionConfig(k_in=None, k_out=None)  # identity projection: the exact gradient


def autograd_per_example(model, modules, encoded):
    """Reference: one backward per row with weights requiring grad."""
    rows = []
    for i in range(len(encoded)):
        b = pad_batch([encoded.input_ids[i]], [encoded.labels[i]], 0)
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(True)
        loss = per_row_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).sum()
        grads = torch.autograd.grad(loss, [m.weight for _, m in modules])
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("pattern,layers", [(r"mlp\.(gate_proj|up_proj|down_proj)$", None), (r"self_attn\.(q|v)_proj$", "1-2")])
def test_identity_projection_equals_autograd(tiny_llama, toy_encoded, pattern, layers):
    modules = select_modules(tiny_llama, ModuleSelection(pattern=pattern, layers=layers))
    feats, _ = featurize_rows(tiny_llama, modules, FactoredProjection(EXACT), toy_encoded, batch_size=4)
    ref = autograd_per_example(tiny_llama, modules, toy_encoded)
    assert feats.shape == ref.shape
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-6)


def test_batch_size_does_not_change_features(tiny_llama, toy_encoded):
    modules = select_modules(tiny_llama, ModuleSelection())
    proj = FactoredProjection(ProjectionConfig(k_in=8, k_out=8, seed=3))
    a, la = featurize_rows(tiny_llama, modules, proj, toy_encoded, batch_size=1)
    b, lb = featurize_rows(tiny_llama, modules, proj, toy_encoded, batch_size=6)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(la, lb)


def test_featurizer_restores_model_state(tiny_llama, toy_encoded):
    tiny_llama.train()
    modules = select_modules(tiny_llama, ModuleSelection())
    featurize_rows(tiny_llama, modules, FactoredProjection(EXACT), toy_encoded)
    assert tiny_llama.training
    assert all(p.requires_grad for p in tiny_llama.parameters())
    assert all(p.grad is None for p in tiny_llama.parameters())  # no weight gradient formed


def test_projected_inner_products_track_exact(tiny_llama, toy_encoded):
    modules = select_modules(tiny_llama, ModuleSelection())
    exact, _ = featurize_rows(tiny_llama, modules, FactoredProjection(EXACT), toy_encoded)
    proj, _ = featurize_rows(tiny_llama, modules, FactoredProjection(ProjectionConfig(k_in=16, k_out=16, seed=7)), toy_encoded)
    assert proj.shape[1] < exact.shape[1]
    iu = np.triu_indices(len(toy_encoded))
    e = (exact @ exact.T).numpy()[iu]
    p = (proj @ proj.T).numpy()[iu]
    assert np.corrcoef(e, p)[0, 1] > 0.9


def test_projection_is_seeded():
    a = FactoredProjection(ProjectionConfig(k_in=4, k_out=4, seed=1)).matrices("m", 10, 12)
    b = FactoredProjection(ProjectionConfig(k_in=4, k_out=4, seed=1)).matrices("m", 10, 12)
    c = FactoredProjection(ProjectionConfig(k_in=4, k_out=4, seed=2)).matrices("m", 10, 12)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_unknown_module_pattern_is_a_clear_error(tiny_llama):
    from datablame.errors import DatablameError

    with pytest.raises(DatablameError, match="attribution.modules"):
        select_modules(tiny_llama, ModuleSelection(pattern="nonexistent_proj$"))
    with pytest.raises(DatablameError, match="layers"):
        select_modules(tiny_llama, ModuleSelection(layers="abc"))
