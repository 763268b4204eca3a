"""The hooked gradient features checked against torch.autograd, one row at a time.

With identity projection a row's feature is, per module, its exact gradient of the row's mean
completion NLL w.r.t. the weight (out x in; Conv1D's in x out weight transposed) followed by
the bias as an extra column. `autograd_features` builds the same vector from
`torch.autograd.grad` of each row's loss alone (the rows padded together as the featurizer
does), so `max_relative_error` of the two is float round-off when the hooks are right.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from datablame.config import ProjectionConfig
from datablame.grads.featurizer import GradientFeaturizer
from datablame.grads.modules import uses_bias, weight_grad_as_features
from datablame.grads.projection import FactoredProjection
from datablame.models.tokenize import Encoded, pad_batch, per_row_loss


def autograd_features(model: nn.Module, modules: Sequence[tuple[str, nn.Module]], encoded: Encoded,
                      *, bias: bool = True, pad_id: int = 0) -> torch.Tensor:
    """[N, dim] per-row parameter gradients by autograd, in the featurizer's layout."""
    params: list[torch.Tensor] = []
    layout: list[tuple[nn.Module, bool]] = []
    for _, mod in modules:
        b = bias and uses_bias(mod)
        params += [mod.weight] + ([mod.bias] if b else [])
        layout.append((mod, b))
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        batch = pad_batch(encoded.input_ids, encoded.labels, pad_id)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.enable_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses = per_row_loss(logits, batch["labels"])
            rows = []
            for i in range(len(losses)):
                grads = iter(torch.autograd.grad(losses[i], params, retain_graph=i < len(losses) - 1))
                parts = []
                for mod, b in layout:
                    w = weight_grad_as_features(mod, next(grads)).float()
                    parts.append(torch.cat([w, next(grads).float().unsqueeze(1)], dim=1) if b else w)
                rows.append(torch.cat([x.flatten() for x in parts]))
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)
    return torch.stack(rows).cpu()


def max_relative_error(model: nn.Module, modules: Sequence[tuple[str, nn.Module]], encoded: Encoded,
                       *, bias: bool = True, batch_size: int = 4) -> float:
    """max |hooked - autograd| / max |autograd| over all rows and parameters (identity projection)."""
    feat = GradientFeaturizer(model, modules, FactoredProjection(ProjectionConfig(k_in=None, k_out=None)), bias=bias)
    ours, _ = feat.featurize(encoded, batch_size=batch_size, desc=False)
    ref = autograd_features(model, modules, encoded, bias=bias)
    if ours.shape != ref.shape:
        raise AssertionError(f"feature shapes differ: hooks {tuple(ours.shape)}, autograd {tuple(ref.shape)}")
    return float((ours - ref).abs().max() / ref.abs().max())
