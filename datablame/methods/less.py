"""LESS-style Adam-normalised gradient cosine (Xia et al. 2024).

A training row's influence on a query under Adam is measured with the update Adam would
take on that row alone from checkpoint c, not with its raw gradient:

    Γ_r^c = m̂ / (sqrt(v̂) + ε),  m = β1 m_c + (1-β1) G_r,  v = β2 v_c + (1-β2) G_r²,
    m̂ = m / (1 - β1^t),  v̂ = v / (1 - β2^t),  t = step_c + 1

with (m_c, v_c) = (exp_avg, exp_avg_sq) of the AdamW state saved in the checkpoint's
`optimizer.pt` (mapped to the selected modules' weights by rebuilding Trainer's parameter
groups), β1, β2, ε from its param groups, and G_r the row's gradient of the mean
completion-token NLL w.r.t. the module's weight. The score is LESS's

    score[q, r] = Σ_c w_c cos(g_q^c, Γ_r^c)

with g_q^c the query's plain (SGD) gradient, both in the `gradient_features` projection,
and w_c = η_c the mean learning rate of the steps leading to checkpoint c (LESS's per-epoch
mean rate; `weighting` as in TracIn).

Projection. Adam's normalisation is elementwise and does not commute with a random
projection, so it is applied *before* projecting: the exact per-row gradient
G_r = Σ_t g_t a_tᵀ of each selected module is formed (module by module, a few rows at a
time, so memory stays at one module's weight size times a small chunk), normalised, then
projected with the same P_out Γ P_inᵀ as every other feature. This is what LESS does
(exact Adam-normalised LoRA gradients, then a random projection); the only approximation
is the projection itself (cosines kept within Johnson-Lindenstrauss error).

Sign: higher = the row's Adam update points along the direction that lowers the query's
loss. Unit: learning-rate-weighted sum of cosines (each cosine in [-1, 1]; |score| <= Σ_c w_c).

Options (`attribution.options.less`): checkpoints ("all" | "last" | N | list of steps),
weighting ("lr" | "lr_x_steps" | "uniform").
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.features.checkpoints import (
    CheckpointInfo,
    checkpoint_features,
    feature_key,
    featurizer_at,
    load_checkpoint_model,
    select_checkpoints,
)
from datablame.features.context import AttributionContext
from datablame.grads import FactoredProjection, select_modules
from datablame.grads.featurizer import as_tokens
from datablame.grads.modules import is_conv1d, linear_dims
from datablame.layout import AttributionLayout
from datablame.methods.base import Method, register
from datablame.methods.tracin import CheckpointOptions, checkpoint_weight
from datablame.models.tokenize import Encoded, pad_batch, per_row_loss
from datablame.utils.io import atomic_save_npz
from datablame.utils.safe_load import load_npz_cache, load_torch_file

# Trainer.get_decay_parameter_names: parameters matching these get no weight decay (group 1)
_NO_DECAY = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
_CHUNK_ELEMENTS = 1 << 25  # per-row gradients formed at once: at most ~128 MiB of float32


def optimizer_param_names(model: nn.Module) -> list[str]:
    """Parameter names in the order of HF Trainer's AdamW state (index i of `optimizer.pt`).

    Trainer builds two groups, decayed then not decayed, each in `named_parameters` order,
    over the trainable parameters (all of them for a full fine-tune, the LoRA matrices for
    an adapter); the state dict numbers parameters group after group.
    """
    from transformers.trainer_pt_utils import get_parameter_names

    named = list(model.named_parameters())
    if hasattr(model, "peft_config"):
        trainable = [n for n, _ in named if "lora_" in n]
    else:
        trainable = [n for n, _ in named]
    decay = set(get_parameter_names(model, [nn.LayerNorm], _NO_DECAY))
    return [n for n in trainable if n in decay] + [n for n in trainable if n not in decay]


def adam_state(model: nn.Module, ckpt: Path, param_names: list[str]) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor, int]], dict]:
    """(exp_avg, exp_avg_sq, step) of the named parameters, and the first group's hyper-parameters."""
    f = Path(ckpt) / "optimizer.pt"
    if not f.is_file():
        raise DatablameError(
            f"{ckpt} has no optimizer.pt (LESS needs the Adam state of each checkpoint)",
            "keep optimizer states when training (HF Trainer saves them unless save_only_model is set)",
        )
    state = load_torch_file(f, what="the Adam state", mmap=True,
                            fix="retrain the run (datablame train) so its checkpoints hold a plain optimizer.pt, "
                                "or use tracin, which needs no optimizer state")
    if not isinstance(state, dict) or "param_groups" not in state or "state" not in state:
        raise DatablameError(f"{f} is not an optimizer state dict", "retrain the run, or use tracin")
    groups = state["param_groups"]
    order = optimizer_param_names(model)
    sizes = [len(g["params"]) for g in groups]
    if sum(sizes) != len(order):
        raise DatablameError(
            f"{f} holds {sum(sizes)} parameters in groups of {sizes}, but this model has "
            f"{len(order)} trainable ones: it was not written by HF Trainer's default AdamW for this model",
            "attribute with the model these checkpoints belong to (or use tracin, which needs no optimizer state)",
        )
    index = {}
    flat = [i for g in groups for i in g["params"]]
    for pos, name in enumerate(order):
        index[name] = flat[pos]
    params = dict(model.named_parameters())
    out = {}
    for name in param_names:
        if name not in index:
            raise DatablameError(f"parameter {name} was not trained (no optimizer state)", "select trained modules")
        st = state["state"].get(index[name])
        if st is None or "exp_avg_sq" not in st:
            raise DatablameError(f"{f} has no Adam state for {name}", "LESS needs an Adam/AdamW optimizer")
        if tuple(st["exp_avg"].shape) != tuple(params[name].shape):
            raise DatablameError(
                f"optimizer state of {name} has shape {tuple(st['exp_avg'].shape)}, the weight {tuple(params[name].shape)}",
                "the checkpoint's optimizer.pt does not belong to its weights",
            )
        out[name] = (st["exp_avg"].float().clone(), st["exp_avg_sq"].float().clone(), int(st["step"]))
    g0 = groups[0]
    hyper = {"beta1": float(g0["betas"][0]), "beta2": float(g0["betas"][1]), "eps": float(g0["eps"])}
    return out, hyper


@contextmanager
def _frozen(model: nn.Module):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def module_io_grads(
    model: nn.Module, modules: list[tuple[str, nn.Linear]], batch: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Unprojected inputs a [B, T, in] and masked output gradients g [B, T, out] of each module.

    Same hooks as the featurizer: Σ_t g_t a_tᵀ is row b's exact weight gradient.
    """
    acts, outs = {}, {}

    def make_hook(name: str):
        def hook(_mod, ctx, output):
            acts[name] = as_tokens(ctx[0].detach().float(), batch["attention_mask"], name)
            if not output.requires_grad:
                output.requires_grad_(True)
            outs[name] = output
            return output

        return hook

    handles = [mod.register_forward_hook(make_hook(n)) for n, mod in modules]
    try:
        with torch.enable_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            losses = per_row_loss(logits, batch["labels"])
            names = [n for n, _ in modules]
            grads = torch.autograd.grad(losses.sum(), [outs[n] for n in names], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    out_grads = {}
    for (name, mod), g in zip(modules, grads, strict=True):
        if g is None:
            g = torch.zeros(*acts[name].shape[:2], linear_dims(mod)[1], device=acts[name].device)
        out_grads[name] = as_tokens(g.float(), batch["attention_mask"], name) * mask
    return acts, out_grads


def adam_features(
    model: nn.Module,
    modules: list[tuple[str, nn.Linear]],
    projection: FactoredProjection,
    moments: dict[str, tuple[torch.Tensor, torch.Tensor, int]],
    hyper: dict,
    encoded: Encoded,
    *,
    batch_size: int,
    pad_id: int,
    desc: str | bool = False,
) -> torch.Tensor:
    """Projected Adam-normalised per-row gradients [N, dim] (module blocks concatenated)."""
    device = next(model.parameters()).device
    b1, b2, eps = hyper["beta1"], hyper["beta2"], hyper["eps"]
    mats = {}
    for name, mod in modules:
        p_in, p_out = projection.matrices(name, *linear_dims(mod))
        m, v, step = moments[f"{name}.weight"]
        if is_conv1d(mod):  # Adam moments in the weight's in x out layout; features are out x in
            m, v = m.T, v.T
        t = step + 1
        mats[name] = (
            None if p_in is None else p_in.to(device),
            None if p_out is None else p_out.to(device),
            (b1 * m).to(device), (b2 * v).to(device), 1 - b1**t, 1 - b2**t,
        )
    dim = sum((mats[n][1].shape[0] if mats[n][1] is not None else linear_dims(mod)[1])
              * (mats[n][0].shape[0] if mats[n][0] is not None else linear_dims(mod)[0]) for n, mod in modules)
    out = torch.empty(len(encoded), dim, dtype=torch.float32)
    with _frozen(model):
        for start in tqdm(range(0, len(encoded), batch_size), desc=desc or "adam", disable=desc is False, unit="batch"):
            sl = slice(start, min(start + batch_size, len(encoded)))
            batch = {k: v.to(device) for k, v in pad_batch(encoded.input_ids[sl], encoded.labels[sl], pad_id).items()}
            acts, grads = module_io_grads(model, modules, batch)
            parts = []
            for name, mod in modules:
                p_in, p_out, bm, bv, c1, c2 = mats[name]
                a, g = acts.pop(name), grads.pop(name)
                chunk = max(1, _CHUNK_ELEMENTS // (linear_dims(mod)[0] * linear_dims(mod)[1]))
                blocks = []
                for s in range(0, a.shape[0], chunk):
                    full = torch.einsum("bto,bti->boi", g[s : s + chunk], a[s : s + chunk])  # exact G_r
                    gamma = ((bm + (1 - b1) * full) / c1) / (((bv + (1 - b2) * full.square()) / c2).sqrt() + eps)
                    if p_out is not None:
                        gamma = torch.einsum("ko,boi->bki", p_out, gamma)
                    if p_in is not None:
                        gamma = torch.einsum("bki,ji->bkj", gamma, p_in)
                    blocks.append(gamma.flatten(1))
                parts.append(torch.cat(blocks))
            out[sl] = torch.cat(parts, dim=1).cpu()
    return out


def adam_row_features(ctx: AttributionContext, info: CheckpointInfo, *, disk: bool = True) -> torch.Tensor:
    """Projected Adam-normalised row gradients at one checkpoint (cached in memory and on disk)."""
    mem = ctx.shared.adam_grads_by_checkpoint
    if str(info.path) in mem:
        return mem[str(info.path)]
    model = load_checkpoint_model(ctx, info.path)
    feat = featurizer_at(ctx, model)  # checks that the modules match the attributed model
    key = feature_key(ctx, model._datablame_fingerprint)  # noqa: SLF001
    path = None
    if disk and ctx.work_dir is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", info.path.name)
        path = AttributionLayout(ctx.work_dir).cache_dir("less_features") / f"{safe}.{key}.npz"
    cached = load_npz_cache(path, ("rows",)) if path is not None and path.is_file() else None
    if cached is not None:
        rows = torch.from_numpy(cached["rows"])
    else:
        modules = select_modules(model, ctx.attribution.modules)
        moments, hyper = adam_state(model, info.path, [f"{n}.weight" for n, _ in modules])
        rows = adam_features(
            model, modules, feat.projection, moments, hyper, ctx.rows,
            batch_size=ctx.attribution.batch_size, pad_id=ctx.tokenizer.pad_token_id or 0,
            desc=f"Adam-normalised row gradients @ {info.path.name}",
        )
        if path is not None:
            atomic_save_npz(path, {"rows": rows.numpy()})
    checkpoint_features(ctx, info, model=model)  # the queries' SGD gradients, same model load
    del model
    mem[str(info.path)] = rows
    return rows


@register
class Less(Method):
    name = "less"
    family = "gradient"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = "learning-rate-weighted sum over checkpoints of cosines (query SGD gradient vs row Adam update)"
    cost = "per checkpoint: one forward+backward per row plus exact per-row module gradients (as a training step)"

    Options = CheckpointOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.checkpoints, self.weighting = self.options.checkpoints, self.options.weighting

    def fit(self, ctx: AttributionContext) -> None:
        for info in select_checkpoints(ctx, self.checkpoints):
            adam_row_features(ctx, info)

    def score(self, ctx: AttributionContext) -> np.ndarray:
        total = torch.zeros(len(ctx.queries), len(ctx.rows), dtype=torch.float64)
        for info in select_checkpoints(ctx, self.checkpoints):
            rows = torch.nn.functional.normalize(adam_row_features(ctx, info).double(), dim=1)
            queries = torch.nn.functional.normalize(checkpoint_features(ctx, info).queries.double(), dim=1)
            total += checkpoint_weight(info, self.weighting) * (queries @ rows.T)
        return total.numpy()
