"""Hidden states and activation gradients at decoder layers, pooled per row (seeds 002, 004).

Shared by the representation methods (`activation_similarity`, `activation_gradient`) and
the cross-checkpoint ones (`delta_h`, `delta_h_grad`, `causal_patching`).

- `h_l(x)`: the output of decoder layer `l` (the residual stream after block `l`, before the
  final norm), captured with a forward hook, shape [T, d] per row.
- `g_l(x) = dL(x)/dh_l(x)`: its gradient, where L is the row's mean next-token NLL over its
  loss tokens (nats per token, the training loss). Rows of a batch are independent (causal
  attention, right padding), so one backward of the summed per-row losses gives every row's
  own gradient. Weight gradients are never requested.
- Pooling to one vector per row over a token span:
  * span "answer" (default): the positions whose next token carries loss, i.e. the positions
    that predict the completion (from the last prompt token to the one before eos);
  * span "all": every non-pad position.
  * pooling "mean" averages the span; "last" takes its last position.
  A row with no loss token falls back to all of its positions (so it still has a vector).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.models.tokenize import IGNORE, Encoded, pad_batch, per_row_loss

Pooling = Literal["mean", "last"]
Span = Literal["answer", "all"]
POOLINGS = ("mean", "last")
SPANS = ("answer", "all")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks (Llama/OLMo/Mistral `model.layers`, GPT-2 `transformer.h`,
    GPT-NeoX `gpt_neox.layers`), also through PEFT wrappers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "layers"):
        obj: object = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise DatablameError(
        f"cannot find the decoder layers of {type(base).__name__}",
        "representation methods support Llama/OLMo/Mistral/GPT-2/GPT-NeoX style models",
    )


def resolve_layers(spec: int | str | Sequence[int] | None, n_layers: int, method: str) -> list[int]:
    """Layer indices from an option: None/"middle" -> [n // 2], "all", an int (negative counts
    from the end), a list, or a string "1,3" / "1-3"."""
    if spec is None or spec == "middle":
        out = [n_layers // 2]
    elif spec == "all":
        out = list(range(n_layers))
    elif isinstance(spec, int):
        out = [spec]
    elif isinstance(spec, str):
        try:
            out = []
            for part in spec.split(","):
                a, _, b = part.strip().partition("-") if not part.strip().startswith("-") else (part, "", "")
                out += list(range(int(a), int(b) + 1)) if b else [int(a)]
        except ValueError:
            raise DatablameError(
                f"{method}: cannot read layers={spec!r}",
                "use an int, a list of ints, 'all', 'middle', '1,3' or '1-3'",
            ) from None
    else:
        out = [int(x) for x in spec]
    resolved = []
    for i in out:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise DatablameError(
                f"{method}: layer {i} does not exist (the model has {n_layers} decoder layers)",
                f"choose layers in 0..{n_layers - 1} (negative counts from the end)",
            )
        if j not in resolved:
            resolved.append(j)
    return resolved


def span_mask(labels: torch.Tensor, attention_mask: torch.Tensor, span: str) -> torch.Tensor:
    """[B, T] float mask of the positions to pool (see the module docstring)."""
    real = attention_mask.float()
    if span == "all":
        return real
    m = torch.zeros_like(real)
    m[:, :-1] = (labels[:, 1:] != IGNORE).float()
    empty = m.sum(dim=1) == 0
    m[empty] = real[empty]
    return m


def pool(x: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, d] -> [B, d]: masked mean, or the last masked position."""
    if pooling == "mean":
        return (x * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    pos = torch.arange(mask.shape[1], device=mask.device)
    last = (mask * (pos + 1)).argmax(dim=1)
    return x[torch.arange(len(x), device=x.device), last]


def _layer_output(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # older transformers return tuples


def _replace_output(out: object, new: torch.Tensor) -> object:
    return (new, *out[1:]) if isinstance(out, tuple) else new


@contextmanager
def layer_hooks(
    model: nn.Module, layers: Sequence[int], edit: Callable[[int, torch.Tensor], torch.Tensor | None]
) -> Iterator[None]:
    """Call `edit(layer, h)` on each listed layer's output; a returned tensor replaces it."""
    blocks = decoder_layers(model)
    handles = []
    for layer in layers:
        def hook(_mod, _inp, out, layer=layer):
            new = edit(layer, _layer_output(out))
            return None if new is None else _replace_output(out, new)

        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def batches(encoded: Encoded, batch_size: int, pad_id: int, device: torch.device) -> Iterator[tuple[slice, dict]]:
    for start in range(0, len(encoded), batch_size):
        stop = min(start + batch_size, len(encoded))
        b = pad_batch(encoded.input_ids[start:stop], encoded.labels[start:stop], pad_id)
        yield slice(start, stop), {k: v.to(device) for k, v in b.items()}


def forward_layers(
    model: nn.Module, batch: dict, layers: Sequence[int], *, grads: bool = False,
    replace: dict[int, torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor]:
    """One forward (and with `grads` one backward) of `batch`: per-token outputs of `layers`
    ([B, T, d] each, detached), their loss gradients, and per-row losses [B].

    `replace[l]` substitutes layer l's output (the integrated-gradients path); its gradient is
    then the gradient w.r.t. the substituted tensor.
    """
    captured: dict[int, torch.Tensor] = {}

    def edit(layer: int, h: torch.Tensor) -> torch.Tensor | None:
        new = None
        if replace is not None and layer in replace:
            new = h = replace[layer].to(h.dtype)  # a float32 path into a bf16 model
        elif grads and not h.requires_grad:  # frozen weights: make the stream differentiable here
            new = h = h.detach().requires_grad_(True)
        captured[layer] = h
        return new

    with layer_hooks(model, layers, edit), torch.set_grad_enabled(grads):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        losses = per_row_loss(logits, batch["labels"])
        hs = [captured[layer] for layer in layers]
        gs = None
        if grads:
            gs = list(torch.autograd.grad(losses.sum(), hs, allow_unused=True))
            gs = [torch.zeros_like(h) if g is None else g for g, h in zip(gs, hs, strict=True)]
            gs = [g.detach().float() for g in gs]
    return [h.detach().float() for h in hs], gs, losses.detach().float()


@dataclass
class LayerFeatures:
    """Pooled per-row vectors of one model at `layers`: h [N, L, d], g [N, L, d] or None."""

    layers: list[int]
    h: torch.Tensor
    g: torch.Tensor | None
    losses: torch.Tensor  # [N] nats per loss token


def layer_features(
    model: nn.Module, encoded: Encoded, layers: Sequence[int], *, pad_id: int, batch_size: int,
    pooling: str = "mean", span: str = "answer", grads: bool = False, desc: str | bool = False,
) -> LayerFeatures:
    """Pooled hidden states (and activation gradients) of every row of `encoded`."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    hs, gs, losses = [], [], []
    it = batches(encoded, batch_size, pad_id, device)
    n_batches = (len(encoded) + batch_size - 1) // batch_size
    try:
        for _, batch in tqdm(it, total=n_batches, desc=desc or "", disable=not desc or n_batches < 4, leave=False):
            h, g, loss = forward_layers(model, batch, layers, grads=grads)
            mask = span_mask(batch["labels"], batch["attention_mask"], span)
            hs.append(torch.stack([pool(x, mask, pooling) for x in h], dim=1).cpu())
            if g is not None:
                gs.append(torch.stack([pool(x, mask, pooling) for x in g], dim=1).cpu())
            losses.append(loss.cpu())
    finally:
        model.train(was_training)
    return LayerFeatures(
        list(layers), torch.cat(hs), torch.cat(gs) if grads else None, torch.cat(losses)
    )


def cosine_per_layer(queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[Q, L, d] x [R, L, d] -> [L, Q, R] cosine similarity per layer (float64; zero vectors
    give 0)."""
    q = torch.nn.functional.normalize(queries.double(), dim=-1)
    r = torch.nn.functional.normalize(rows.double(), dim=-1)
    return torch.einsum("qld,rld->lqr", q, r)


def attributed_layer_features(
    ctx: AttributionContext, layers: Sequence[int], *, pooling: str, span: str, grads: bool
) -> tuple[LayerFeatures, LayerFeatures]:
    """(rows, queries) features of the attributed model, computed once per run and setting."""
    key = (tuple(layers), pooling, span, grads)
    if key not in ctx.shared.hidden:
        pad = ctx.tokenizer.pad_token_id or 0
        bs = ctx.attribution.batch_size
        what = "activation gradients" if grads else "hidden states"
        rows = layer_features(ctx.model, ctx.rows, layers, pad_id=pad, batch_size=bs, pooling=pooling,
                              span=span, grads=grads, desc=f"training-row {what}")
        queries = layer_features(ctx.model, ctx.query_rows, layers, pad_id=pad, batch_size=bs,
                                 pooling=pooling, span=span, grads=grads)
        ctx.shared.hidden[key] = (rows, queries)
    return ctx.shared.hidden[key]
