"""Gradient checkpointing while featurizing (issue 21, item 4): the same features with less memory.

Checkpointed decoder layers replay their forward in backward; the featurizer's hooks must ignore
that replay, and featurizing must leave the model as it found it (eval flags, checkpointing off,
no input-grad hooks), on every architecture, full model and LoRA.
"""

from __future__ import annotations

import pytest
import torch
from influence_inputs import random_rows
from torch import nn

from datablame.config import ModuleSelection, ProjectionConfig
from datablame.errors import DatablameError
from datablame.grads import FactoredProjection, GradientFeaturizer, select_modules
from datablame.grads.checkpointing import checkpointed_layers
from datablame.models.tiny_archs import ARCHITECTURES, tiny_model, with_lora


def _featurize(model, modules, checkpointing: bool):
    """Features, losses, and how often the first selected module ran (2 per batch when replayed)."""
    calls = []
    handle = modules[0][1].register_forward_hook(lambda *_: calls.append(1))
    try:
        proj = FactoredProjection(ProjectionConfig(k_in=8, k_out=8, seed=2))
        feats, losses = GradientFeaturizer(model, modules, proj, checkpointing=checkpointing).featurize(
            random_rows(6, seed=4), batch_size=3, desc=False)
    finally:
        handle.remove()
    return feats, losses, len(calls)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_checkpointed_features_equal_plain_ones(arch, lora):
    model = tiny_model(arch)
    model = with_lora(model, arch) if lora else model
    sel = ModuleSelection(lora_only=True) if lora else ModuleSelection(preset="mlp+attention")
    modules = select_modules(model, sel)
    plain, plain_loss, plain_calls = _featurize(model, modules, False)
    ckpt, ckpt_loss, ckpt_calls = _featurize(model, modules, True)
    assert (plain_calls, ckpt_calls) == (2, 4), "the checkpointed layers did not replay their forward"
    scale = plain.abs().max()
    assert scale > 0 and (ckpt - plain).abs().max() <= 1e-6 * scale
    assert torch.allclose(ckpt_loss, plain_loss, rtol=0, atol=1e-6)
    # the model is left as it was: eval flags, checkpointing off, no hooks added on the embeddings
    assert not any(m.training for m in model.modules())
    assert not any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    emb = model.get_input_embeddings()
    assert not emb._forward_hooks


def test_a_model_already_checkpointing_keeps_it():
    model = tiny_model("qwen2")
    model.activation_checkpointing_enable()
    with checkpointed_layers(model, True):
        pass
    assert model.is_activation_checkpointing


def test_a_model_without_checkpointing_support_gets_one_message():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(DatablameError) as err, checkpointed_layers(model, True):
        pass
    assert "does not support gradient checkpointing" in err.value.problem
    assert "model.gradient_checkpointing: false" in err.value.fix


def test_model_gradient_checkpointing_reaches_the_run_featurizer():
    """`model.gradient_checkpointing: true` checkpoints featurizing as well as training: a method's
    scores are the same as without it."""
    from influence_inputs import tiny_inputs

    from datablame.features.gradients import featurizer_for
    from datablame.methods import get_method

    model = tiny_model("qwen2")
    scores = {}
    for flag in (False, True):
        ctx = tiny_inputs(model, random_rows(8, seed=5), random_rows(2, seed=6), k=8, pattern=r"mlp\.down_proj$")
        ctx.model_cfg = ctx.model_cfg.model_copy(update={"gradient_checkpointing": flag})
        assert featurizer_for(ctx).checkpointing is flag
        scores[flag] = get_method("grad_dot", {}).score(ctx)
    assert torch.allclose(torch.as_tensor(scores[True]), torch.as_tensor(scores[False]), rtol=1e-6, atol=0)


def test_curvature_observer_sees_the_same_statistics():
    """K-FAC/EKFAC factors are fitted through the featurizer's observer; under checkpointing it is
    called from the backward (in reverse module order) with the same activations and gradients."""
    model = tiny_model("gpt2")
    modules = select_modules(model, ModuleSelection(preset="mlp+attention"))
    proj = FactoredProjection(ProjectionConfig(k_in=8, k_out=8, seed=2))
    stats = {}
    for ck in (False, True):
        seen: dict[str, torch.Tensor] = {}

        def observe(name, a, g, mask, seen=seen):
            seen[name] = seen.get(name, 0) + torch.einsum("bti,btj->ij", a, a) + torch.einsum("bto,btp->op", g, g).sum()
        GradientFeaturizer(model, modules, proj, checkpointing=ck).featurize(random_rows(6, seed=4), 3, observer=observe,
                                                                              desc=False)
        stats[ck] = seen
    assert set(stats[True]) == {n for n, _ in modules}
    for name, v in stats[False].items():
        assert torch.allclose(stats[True][name], v, rtol=1e-6, atol=0), name
