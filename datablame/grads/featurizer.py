"""Batched per-row gradient features from hooks, without forming weight gradients.

Forward hooks keep each selected layer's (projected) input activations and mark its output
as requiring grad; one backward of the summed per-row losses w.r.t. those outputs gives the
output gradients g. Parameters are frozen, so autograd computes activation gradients only.
Rows never interact (eval mode, causal attention, right padding), so summing row losses
gives each row its own gradient and the result does not depend on the batch size.

The feature of a row is the concatenation over modules of sum_t (P_out g_t)(P_in a_t)^T,
the gradient of that row's mean completion-token NLL (nats) w.r.t. the layer weights
(projected). Identity projection gives the exact per-example gradient. A module with a bias
(when `bias` is on) gets one more input column, a constant 1 appended to the projected
activations (kronfluence's convention), so the last column of its block is the bias gradient
P_out sum_t g_t. GPT-2's Conv1D is the same layer with a transposed weight: its block is the
transpose of its weight gradient. Activations of any leading shape are accepted: OPT's MLP
sees [batch*tokens, d], which is viewed back as [batch, tokens, d].

An optional `observer(name, a, g, mask)` sees, per module and batch, the projected input
activations a [B, T, k_in], the projected output gradients g [B, T, k_out] (zero on padding)
and the real-token mask [B, T]; curvature fitting (K-FAC/EKFAC covariances) uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.grads.checkpointing import checkpointed_layers
from datablame.grads.modules import linear_dims, uses_bias
from datablame.grads.progress import EtaLog
from datablame.grads.projection import FactoredProjection
from datablame.models.tokenize import Encoded, pad_batch, per_row_loss

# observer(module name, projected activations [B,T,k_in], projected masked output grads [B,T,k_out], mask [B,T])
Observer = Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor], None]


class GradientFeaturizer:
    def __init__(
        self,
        model: nn.Module,
        modules: Sequence[tuple[str, nn.Module]],
        projection: FactoredProjection,
        bias: bool = True,
        autocast: torch.dtype | None = None,
        checkpointing: bool = False,
    ) -> None:
        self.model = model
        self.autocast = autocast  # forward/backward under torch.autocast in this dtype (None: as loaded)
        self.checkpointing = checkpointing  # recompute layer activations in backward (same features, less memory)
        self._replaying = False  # True during backward, where checkpointed layers re-run their forward
        self.modules = list(modules)
        self.projection = projection
        self.device = next(model.parameters()).device
        self._mats = {}
        self._bias = {name: bias and uses_bias(mod) for name, mod in self.modules}
        for name, mod in self.modules:
            d_in, d_out = linear_dims(mod)
            p_in, p_out = projection.matrices(name, d_in, d_out)
            self._mats[name] = (
                None if p_in is None else p_in.to(self.device),
                None if p_out is None else p_out.to(self.device),
            )
        self.shapes = [
            (
                name,
                (self._mats[name][1].shape[0] if self._mats[name][1] is not None else linear_dims(mod)[1]),
                (self._mats[name][0].shape[0] if self._mats[name][0] is not None else linear_dims(mod)[0])
                + int(self._bias[name]),
            )
            for name, mod in self.modules
        ]
        self.dim = sum(o * i for _, o, i in self.shapes)

    @contextmanager
    def _frozen(self):
        """Eval mode, all parameters frozen (layers checkpointed when asked); the previous state is
        restored afterwards."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        was_training = self.model.training
        for p, _ in flags:
            p.requires_grad_(False)
        self.model.eval()
        try:
            with checkpointed_layers(self.model, self.checkpointing):
                yield
        finally:
            for p, f in flags:
                p.requires_grad_(f)
            self.model.train(was_training)

    def featurize_batch(
        self, batch: dict[str, torch.Tensor], observer: Observer | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (features [B, dim] float32, per-row loss [B]) for one padded batch.

        Without checkpointing, autograd.grad w.r.t. the hooked modules' outputs gives their output
        gradients. With it, those outputs must not be held (that would keep what checkpointing
        frees), so a tensor hook on each output turns its gradient into the module's block during
        the backward, and only the small projected activations are kept until then."""
        acts: dict[str, torch.Tensor] = {}
        outs: dict[str, torch.Tensor] = {}
        blocks: dict[str, torch.Tensor] = {}
        handles = []

        batch = {k: v.to(self.device) for k, v in batch.items()}
        mask2 = batch["attention_mask"]
        names = [n for n, _ in self.modules]

        def make_hook(name: str):
            p_in = self._mats[name][0]

            def absorb(g: torch.Tensor) -> None:  # runs in backward (checkpointing only)
                blocks[name] = self._block(name, acts.pop(name), g, mask2, observer)

            def hook(_mod, inputs, output):
                if self._replaying:  # a checkpointed layer's recompute: the same graph, nothing to record
                    if not output.requires_grad:
                        output.requires_grad_(True)
                    return output
                if name in acts or name in blocks:
                    raise RuntimeError(f"module {name} ran twice in one forward; cannot featurize it")
                a = as_tokens(inputs[0].detach().float(), mask2, name)
                with torch.autocast(self.device.type, enabled=False):  # the projection stays float32
                    a = a if p_in is None else a @ p_in.T
                if self._bias[name]:
                    a = torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1)
                acts[name] = a
                if not output.requires_grad:
                    output.requires_grad_(True)
                if self.checkpointing:
                    output.register_hook(absorb)
                else:
                    outs[name] = output
                return output

            return hook

        for name, mod in self.modules:
            handles.append(mod.register_forward_hook(make_hook(name)))
        try:
            cast = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None else nullcontext()
            no_cache = {"use_cache": False} if self.checkpointing else {}  # a cache is never read here
            with torch.enable_grad(), cast:
                logits = self.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **no_cache
                ).logits
                losses = per_row_loss(logits, batch["labels"])
                del logits
                self._replaying = True
                if self.checkpointing:
                    torch.autograd.backward(losses.sum())  # the tensor hooks fill `blocks`
                    grads = [None] * len(names)
                else:
                    grads = list(torch.autograd.grad(losses.sum(), [outs[n] for n in names], allow_unused=True))
        finally:
            self._replaying = False
            for h in handles:
                h.remove()
        parts = []
        for name, g, (_, o, i) in zip(names, grads, self.shapes, strict=True):
            if name in blocks:
                parts.append(blocks[name])
            elif g is not None:
                parts.append(self._block(name, acts[name], g, mask2, observer))
            else:  # module does not influence the loss (cannot happen for a transformer block)
                a = acts[name]
                if observer is not None:
                    observer(name, a, a.new_zeros(*a.shape[:2], o), mask2)
                parts.append(a.new_zeros(a.shape[0], o * i))
        return torch.cat(parts, dim=1), losses.detach().float()

    def _block(self, name: str, a: torch.Tensor, g: torch.Tensor, mask2: torch.Tensor,
               observer: Observer | None) -> torch.Tensor:
        """One module's block [B, o*i]: sum over real tokens of (P_out g_t)(P_in a_t)^T."""
        g = as_tokens(g.float(), mask2, name) * mask2.unsqueeze(-1).float()
        p_out = self._mats[name][1]
        if p_out is not None:
            g = g @ p_out.T
        if observer is not None:
            observer(name, a, g, mask2)
        return torch.einsum("bto,bti->boi", g, a).flatten(1)

    def featurize(
        self, encoded: Encoded, batch_size: int = 8, pad_id: int = 0, desc: str | None = None,
        observer: Observer | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [N, dim] (CPU float32) and per-row losses [N], rows in the given order."""
        n = len(encoded)
        feats = torch.empty((n, self.dim), dtype=torch.float32)
        losses = torch.empty(n, dtype=torch.float32)
        # after two batches: measured s/row x rows left (logged when the stage is long); the bar shows an ETA
        eta = EtaLog(desc or "featurize", n, "row", after=2 * batch_size) if desc is not False else None
        with self._frozen():
            for start in tqdm(range(0, n, batch_size), desc=desc or "featurize", disable=desc is False or n <= batch_size, unit="batch"):
                idx = slice(start, min(start + batch_size, n))
                batch = pad_batch(encoded.input_ids[idx], encoded.labels[idx], pad_id)
                f, lo = self.featurize_batch(batch, observer)
                feats[idx] = f.cpu()
                losses[idx] = lo.cpu()
                if eta is not None:
                    eta.update(idx.stop)
        return feats, losses


def featurize_rows(
    model: nn.Module,
    modules: Sequence[tuple[str, nn.Module]],
    projection: FactoredProjection,
    encoded: Encoded,
    *,
    batch_size: int = 8,
    pad_id: int = 0,
    desc: str | None = None,
    bias: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    return GradientFeaturizer(model, modules, projection, bias).featurize(encoded, batch_size, pad_id, desc)


def as_tokens(x: torch.Tensor, mask: torch.Tensor, name: str = "module") -> torch.Tensor:
    """A module's activations (or output gradients) as [B, T, d] for a batch with attention
    mask [B, T]: [B, T, d] as is; [B*T, d] (OPT flattens its MLP input) viewed back; [n_real, d]
    (only the real tokens, in order) scattered to their positions with zeros on padding."""
    b, t = mask.shape
    if x.dim() == 3 and x.shape[:2] == (b, t):
        return x
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] == b * t:
        return flat.view(b, t, -1)
    keep = mask.reshape(-1).bool()
    if flat.shape[0] == int(keep.sum()):
        out = flat.new_zeros(b * t, flat.shape[-1])
        out[keep] = flat
        return out.view(b, t, -1)
    raise DatablameError(
        f"{name} sees activations of shape {tuple(x.shape)} in a batch of {b} rows x {t} tokens "
        f"({int(keep.sum())} real): they are not one vector per token",
        "select modules that act on each token (attribution.modules.pattern)",
    )
