"""Every supported architecture, full model and LoRA, on tiny random models built from configs:

- identity-projection features equal torch.autograd per-row gradients over weights AND biases
  (GPT-2's transposed Conv1D, OPT's flattened MLP inputs, Phi3's fused gate_up_proj included);
- our EKFAC ranks like kronfluence's (Spearman >= 0.999, identity projection, biases on both sides);
- tied weights are refused with a message, presets pick each family's MLP, layer indices come
  from the decoder-layer list, a partial block warns, and a wrong score shape names the method.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from influence_inputs import random_rows, tiny_inputs
from scipy.stats import spearmanr

from datablame.config import ModuleSelection
from datablame.errors import DatablameError
from datablame.grads.autograd_check import max_relative_error
from datablame.grads.modules import select_modules
from datablame.methods import get_method
from datablame.methods.base import check_scores_shape
from datablame.models.tiny_archs import tiny_model, with_lora

MATRIX = ("gpt2", "gpt_neox", "opt", "qwen2", "gemma", "phi3", "olmo2")


def _model(arch: str, lora: bool):
    m = tiny_model(arch)
    return with_lora(m, arch) if lora else m


def _selection(lora: bool) -> ModuleSelection:
    return ModuleSelection(lora_only=True) if lora else ModuleSelection(preset="mlp+attention")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", MATRIX)
def test_features_equal_autograd(arch, lora):
    model = _model(arch, lora)
    modules = select_modules(model, _selection(lora))
    err = max_relative_error(model, modules, random_rows(5, seed=3))
    assert err < 1e-5, f"{arch} {'lora' if lora else 'full'}: max relative error {err:.2e}"


def test_bias_column_is_optional():
    model = tiny_model("gpt2")
    sel = select_modules(model, ModuleSelection())
    assert max_relative_error(model, sel, random_rows(4, seed=5), bias=False) < 1e-5
    from datablame.config import ProjectionConfig
    from datablame.grads import FactoredProjection, GradientFeaturizer

    ident = FactoredProjection(ProjectionConfig(k_in=None, k_out=None))
    with_b = GradientFeaturizer(model, sel, ident).shapes
    without = GradientFeaturizer(model, sel, ident, bias=False).shapes
    assert [i for _, _, i in with_b] == [i + 1 for _, _, i in without]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", MATRIX)
def test_ekfac_agrees_with_kronfluence(arch, lora):
    pytest.importorskip("kronfluence")
    model = _model(arch, lora)
    rows, queries = random_rows(12, seed=11), random_rows(3, seed=12)

    def inputs():
        inp = tiny_inputs(model, rows, queries, k=None, pattern=None, batch_size=6)
        if lora:
            inp.attribution = inp.attribution.model_copy(update={"modules": ModuleSelection(lora_only=True)})
        return inp

    ours = get_method("ekfac").score(inputs())
    kron = get_method("kronfluence").score(inputs())
    assert ours.shape == kron.shape == (3, 12)
    assert spearmanr(ours.ravel(), kron.ravel())[0] >= 0.999


@pytest.mark.parametrize("arch,pattern", [("gpt2", r"lm_head$"), ("gemma", r"lm_head$")])
def test_tied_weights_are_refused(arch, pattern):
    model = tiny_model(arch)
    assert model.config.tie_word_embeddings
    with pytest.raises(DatablameError, match=r"shared with .*(wte|embed_tokens).*tied weights"):
        select_modules(model, ModuleSelection(pattern=pattern))


def test_untied_lm_head_matches_autograd():
    model = tiny_model("qwen2")  # tie_word_embeddings False: lm_head is its own weight
    modules = select_modules(model, ModuleSelection(pattern=r"lm_head$"))
    assert max_relative_error(model, modules, random_rows(3, seed=4)) < 1e-5


@pytest.mark.parametrize("arch,expected", [
    ("gpt2", ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"]),
    ("gpt_neox", ["gpt_neox.layers.0.mlp.dense_h_to_4h", "gpt_neox.layers.0.mlp.dense_4h_to_h"]),
    ("opt", ["model.decoder.layers.0.fc1", "model.decoder.layers.0.fc2"]),
    ("phi3", ["model.layers.0.mlp.gate_up_proj", "model.layers.0.mlp.down_proj"]),
    ("qwen2", ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]),
])
def test_presets_and_decoder_layer_indices(arch, expected):
    names = [n for n, _ in select_modules(tiny_model(arch), ModuleSelection(layers="0"))]
    assert names == expected


def test_llama_preset_is_the_old_default(tiny_llama):
    old = [n for n, _ in select_modules(tiny_llama, ModuleSelection(pattern=r"mlp\.(gate_proj|up_proj|down_proj)$"))]
    assert [n for n, _ in select_modules(tiny_llama, ModuleSelection())] == old


def test_partial_block_warns(caplog):
    model = tiny_model("phi3")
    with caplog.at_level(logging.WARNING, logger="datablame"):
        select_modules(model, ModuleSelection(pattern=r"mlp\.(gate_proj|up_proj|down_proj)$"))
    assert "gate_up_proj" in caplog.text and "only part" in caplog.text


def test_wrong_score_shape_names_the_method():
    check_scores_shape("ekfac", np.zeros((2, 5)), 2, 5)
    with pytest.raises(DatablameError, match="kronfluence.*\\(30, 5\\).*\\(2, 5\\)"):
        check_scores_shape("kronfluence", np.zeros((30, 5)), 2, 5)


def test_selection_checked_before_training():
    from types import SimpleNamespace

    from datablame.inputs import check_module_selection

    def cfg(method, **sel):
        return SimpleNamespace(attribution=SimpleNamespace(method_names=lambda: [method], modules=ModuleSelection(**sel)))

    model = tiny_model("gpt2")
    assert check_module_selection(model, cfg("ekfac")) == [
        f"transformer.h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")]
    with pytest.raises(DatablameError, match="no linear module matches"):
        check_module_selection(model, cfg("grad_cosine", pattern=r"mlp\.down_proj$"))
    with pytest.raises(DatablameError, match="tied weights"):
        check_module_selection(model, cfg("ekfac", pattern=r"lm_head$"))
    assert check_module_selection(model, cfg("bm25", pattern=r"nothing$")) == []  # no gradient method
