"""LESS: sign on planted facts, optimizer-state mapping, Adam normalisation vs autograd."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from datablame.errors import DatablameError
from datablame.features.checkpoints import load_checkpoint_model, select_checkpoints
from datablame.features.context import SharedFeatures
from datablame.grads import FactoredProjection, select_modules
from datablame.methods import get_method
from datablame.methods.less import adam_features, adam_state, optimizer_param_names
from datablame.models.tokenize import pad_batch, per_row_loss


def test_planted_rows_score_higher(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("less", checkpoints=3)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and scores.dtype == np.float64
    total_lr = sum(i.lr for i in select_checkpoints(inputs, 3))
    assert np.abs(scores).max() <= total_lr * (1 + 1e-9)  # lr-weighted sum of cosines
    idx = inputs.corpus.index_of()
    for qi, q in enumerate(inputs.queries):
        rel = [idx[r] for r in truth[q.query_id]]
        rest = np.setdiff1d(np.arange(scores.shape[1]), rel)
        assert scores[qi, rel].mean() > scores[qi, rest].mean(), q.query_id


def test_optimizer_order_matches_trainer(planted_run, tmp_path):
    """Our rebuilt parameter order is the one HF Trainer gives its AdamW (decay group first)."""
    from transformers import Trainer, TrainingArguments

    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    model = inputs.model
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, weight_decay=0.01)
    trainer = Trainer(model=model, args=args)
    opt = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    expected = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    assert optimizer_param_names(model) == expected
    assert any("norm" in n for n in expected[-3:])  # the no-decay group really is second


def test_adam_features_match_autograd(planted_run):
    """Identity projection, one module: Γ = m̂/(√v̂+ε) from the saved state and the row's autograd gradient."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    info = select_checkpoints(inputs, "all")[2]
    model = load_checkpoint_model(inputs, info.path)
    sel = inputs.attribution.modules.model_copy(update={"pattern": r"mlp\.down_proj$", "layers": "1"})
    modules = select_modules(model, sel)
    (name, mod), = modules
    moments, hyper = adam_state(model, info.path, [f"{name}.weight"])
    m, v, step = moments[f"{name}.weight"]
    assert step == info.step and v.min() >= 0 and hyper["beta1"] == 0.9
    proj = FactoredProjection(inputs.attribution.projection.model_copy(update={"k_in": None, "k_out": None}))
    pad = inputs.tokenizer.pad_token_id or 0
    feats = adam_features(model, modules, proj, moments, hyper, inputs.rows, batch_size=4, pad_id=pad)
    b1, b2, eps, t = hyper["beta1"], hyper["beta2"], hyper["eps"], step + 1
    for r in [0, 17, len(inputs.rows) - 1]:
        batch = pad_batch(inputs.rows.input_ids[r : r + 1], inputs.rows.labels[r : r + 1], pad)
        model.zero_grad()
        per_row_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"]).sum().backward()
        grad = mod.weight.grad.detach()
        mm = (b1 * m + (1 - b1) * grad) / (1 - b1**t)
        vv = (b2 * v + (1 - b2) * grad**2) / (1 - b2**t)
        torch.testing.assert_close(feats[r], (mm / (vv.sqrt() + eps)).flatten(), rtol=1e-4, atol=1e-5)


def test_deterministic(planted_run):
    _, make_inputs, _ = planted_run
    a = get_method("less", checkpoints="last").score(make_inputs())
    b = get_method("less", checkpoints="last").score(make_inputs())  # second run: features from disk
    np.testing.assert_array_equal(a, b)


def test_missing_optimizer_state(planted_run, tmp_path):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    src = select_checkpoints(inputs, "last")[0].path
    ck = tmp_path / "model" / src.name
    shutil.copytree(src, ck, ignore=shutil.ignore_patterns("optimizer.pt"))
    shutil.copytree(src.parent / "final", tmp_path / "model" / "final")  # the tokenizer lives there
    inputs.checkpoints, inputs.work_dir = [ck], None
    inputs.shared = SharedFeatures()
    with pytest.raises(DatablameError, match="optimizer.pt"):
        get_method("less").score(inputs)
    with pytest.raises(DatablameError, match="weighting"):
        get_method("less", weighting="adam")
