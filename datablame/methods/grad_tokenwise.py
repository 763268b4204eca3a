"""Token-wise gradient cosine (Grosse et al. 2023, token-wise influence): a training row is
scored by its most aligned token, not by its summed gradient.

A row's gradient w.r.t. a linear layer is a sum over positions, G = Σ_t g_t a_tᵀ (a: the
layer's input activation, g: the gradient of the row's mean loss w.r.t. its output at
position t). grad_cosine compares the query with that sum, so a long document whose one
relevant sentence sits among generic tokens is outvoted by its own filler, and dividing by
the whole-row norm favours short rows. Here each position keeps its own term, in the same
factored projection as grad_cosine (`FactoredProjection`, matrices P_in k_in x in,
P_out k_out x out, per module m):

    G_t,m = (P_out g_t)(P_in a_t)ᵀ                       (never formed)
    <Q, G_t> = Σ_m (P_out g_t)ᵀ Q_m (P_in a_t)           (one einsum for all queries)
    ||G_t||² = Σ_m ||P_out g_t||² ||P_in a_t||²
    cos_t[q, r] = <Q_q, G_t> / (||Q_q|| ||G_t||)

with Q_q the query's summed projected gradient (`gradient_features` layout; a query has
one answer token on hops anyway). Summing <Q, G_t> over t gives grad_dot exactly.

Positions t of a row: its real tokens whose projected gradient is nonzero, i.e. every
position that feeds a loss token (causal attention: with loss on completions, prompt
positions count too, through attention). `positions: "loss"` keeps only the positions
that directly predict a loss token (the next token is labelled).

    score[q, r] = reduce_t cos_t[q, r]      reduce: "max" (default), "topk_mean" (mean of the
                                            `topk` largest), "mean" (mean over positions)

A row with no such position scores 0.

Sign: higher = the row's most aligned token(s) push the query's loss down (one SGD step on
that token's gradient term lowers the query loss to first order). Unit: cosine similarity,
unitless in [-1, 1]. Cost: one forward+backward per row, like grad_cosine (activation
gradients only; the queries' features come from the `gradient_features` cache when another
method computed them), plus Q·k_out·k_in multiply-adds per token and module; memory
O(batch·T·Q), nothing per token is kept past its batch.

Options (`attribution.options.grad_tokenwise`): reduce ("max" | "topk_mean" | "mean"),
topk (int, for topk_mean), positions ("nonzero" | "loss").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.features.gradients import GradFeatures, featurizer_for, measure_queries
from datablame.grads import GradientFeaturizer
from datablame.methods.base import Method, MethodOptions, register
from datablame.models.tokenize import IGNORE, Encoded, pad_batch

REDUCES = ("max", "topk_mean", "mean")
POSITIONS = ("nonzero", "loss")
_MAX_ELEMENTS = 2**25  # cap on the [B, T, Q_chunk, k] intermediate of one einsum (128 MiB fp32)


@dataclass
class TokenTerms:
    """One batch of rows: per-position inner products with every query and norms."""

    rows: slice  # which training rows (in corpus order)
    dots: torch.Tensor  # [B, T, Q] float64: <Q_q, G_t> summed over modules
    norms_sq: torch.Tensor  # [B, T] float64: ||G_t||²
    valid: torch.Tensor  # [B, T] bool: positions that count for the row


class _TokenAccumulator:
    """Featurizer observer: accumulates, module by module, one batch's per-token terms."""

    def __init__(self, query_blocks: dict[str, torch.Tensor]) -> None:
        self.query_blocks = query_blocks  # module -> [Q, k_out, k_in] float32
        self.dots: torch.Tensor | None = None
        self.norms_sq: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def __call__(self, name: str, a: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> None:
        q = self.query_blocks[name].to(a.device)
        dots = _module_dots(a, g, q).double()
        norms = (g.double().square().sum(-1)) * (a.double().square().sum(-1))
        if self.dots is None:
            self.dots, self.norms_sq, self.mask = dots, norms, mask.bool()
        else:
            self.dots += dots
            self.norms_sq += norms


def _module_dots(a: torch.Tensor, g: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(P_out g_t)ᵀ Q_m (P_in a_t) for every position and query: [B, T, Q] float32.

    Contracts the smaller side first so the intermediate is [B, T, Q, min(k_in, k_out)];
    queries are chunked to keep it under _MAX_ELEMENTS.
    """
    b, t, k_in = a.shape
    n_q, k_out, _ = q.shape
    k = min(k_in, k_out)
    chunk = max(1, _MAX_ELEMENTS // max(1, b * t * k))
    out = []
    for s in range(0, n_q, chunk):
        qc = q[s : s + chunk]
        if k_out <= k_in:
            out.append(torch.einsum("btqo,bto->btq", torch.einsum("bti,qoi->btqo", a, qc), g))
        else:
            out.append(torch.einsum("btqi,bti->btq", torch.einsum("bto,qoi->btqi", g, qc), a))
    return torch.cat(out, dim=2) if out else a.new_zeros(b, t, 0)


def token_terms(
    featurizer: GradientFeaturizer,
    encoded: Encoded,
    query_features: torch.Tensor,
    *,
    batch_size: int,
    pad_id: int,
    positions: str = "nonzero",
    desc: str | bool = "token-wise gradients",
) -> Iterator[tuple[TokenTerms, torch.Tensor, torch.Tensor]]:
    """Per batch of rows (in order): the token terms, and the rows' summed features [B, D]
    and losses [B] (what `gradient_features` would hold for them)."""
    query_blocks, start = {}, 0
    for name, k_out, k_in in featurizer.shapes:  # the row-major layout of GradFeatures.blocks
        block = query_features[:, start : start + k_out * k_in].float()
        query_blocks[name] = block.reshape(len(query_features), k_out, k_in).contiguous()
        start += k_out * k_in
    n = len(encoded)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc or "", disable=desc is False or n <= batch_size, unit="batch"):
        idx = slice(start, min(start + batch_size, n))
        part = Encoded(encoded.input_ids[idx], encoded.labels[idx])
        acc = _TokenAccumulator(query_blocks)
        feats, losses = featurizer.featurize(part, batch_size, pad_id, desc=False, observer=acc)
        if acc.dots is None:  # no modules selected: nothing to score
            raise DatablameError("no gradient modules were selected", "set attribution.modules to include linear layers")
        valid = acc.mask & (acc.norms_sq > 0)
        if positions == "loss":
            labels = pad_batch(part.input_ids, part.labels, pad_id)["labels"].to(valid.device)
            predicts_loss = torch.zeros_like(valid)
            predicts_loss[:, :-1] = labels[:, 1:] != IGNORE
            valid &= predicts_loss
        yield TokenTerms(idx, acc.dots.cpu(), acc.norms_sq.cpu(), valid.cpu()), feats, losses


def reduce_cosines(terms: TokenTerms, query_norms: torch.Tensor, reduce: str, topk: int) -> torch.Tensor:
    """Scores [Q, B] float64 of one batch: reduce over each row's valid positions of the
    per-token cosine with every query (0 for a row with no valid position)."""
    denom = terms.norms_sq.clamp_min(1e-300).sqrt()[:, :, None] * query_norms.clamp_min(1e-300)[None, None, :]
    cos = terms.dots / denom  # [B, T, Q]
    valid = terms.valid[:, :, None].expand_as(cos)
    n_valid = terms.valid.sum(dim=1)  # [B]
    if reduce == "mean":
        score = (cos * valid).sum(dim=1) / n_valid.clamp_min(1)[:, None]
    else:
        filled = cos.masked_fill(~valid, -torch.inf)
        k = 1 if reduce == "max" else min(topk, cos.shape[1])
        top = filled.topk(k, dim=1).values  # [B, k, Q], -inf where a row has fewer than k positions
        finite = torch.isfinite(top)
        score = top.masked_fill(~finite, 0).sum(dim=1) / finite.sum(dim=1).clamp_min(1)
    score = score.masked_fill((n_valid == 0)[:, None], 0.0)
    return score.T.contiguous()


@register
class GradTokenwise(Method):
    name = "grad_tokenwise"
    family = "gradient"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = "cosine similarity of the query gradient with a row's per-token gradient terms, unitless in [-1, 1]"
    cost = "one forward+backward per row (activation gradients only) plus Q*k_out*k_in per token and module"
    sign = "higher = the row's most aligned token(s) push the query's loss down"

    class Options(MethodOptions):
        reduce: Literal[REDUCES] = Field("max", description="per row: its best token's cosine (max), the mean of "
                                         "its topk best (topk_mean) or the mean over positions")
        topk: int = Field(4, ge=1, description="tokens averaged by reduce: topk_mean")
        positions: Literal[POSITIONS] = Field("nonzero", description="positions of a row: every one with a nonzero "
                                              "gradient, or only those predicting a loss token (loss)")

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.reduce, self.topk, self.positions = self.options.reduce, self.options.topk, self.options.positions

    def score(self, ctx: AttributionContext) -> np.ndarray:
        feat = featurizer_for(ctx)
        pad = ctx.tokenizer.pad_token_id or 0
        bs = ctx.attribution.batch_size
        cached: GradFeatures | None = ctx.shared.grads
        if cached is not None:
            queries, query_losses = cached.queries, cached.query_losses
        else:
            queries, query_losses = measure_queries(ctx, lambda enc: feat.featurize(enc, bs, pad, desc=False))
        query_norms = queries.double().norm(dim=1)
        n_rows = len(ctx.rows)
        scores = torch.zeros(len(queries), n_rows, dtype=torch.float64)
        row_feats = None if cached is not None else torch.empty(n_rows, feat.dim, dtype=torch.float32)
        row_losses = torch.empty(n_rows, dtype=torch.float32)
        for terms, feats, losses in token_terms(feat, ctx.rows, queries, batch_size=bs, pad_id=pad,
                                                positions=self.positions):
            scores[:, terms.rows] = reduce_cosines(terms, query_norms, self.reduce, self.topk)
            if row_feats is not None:
                row_feats[terms.rows] = feats.cpu()
                row_losses[terms.rows] = losses.cpu()
        if row_feats is not None:  # the summed features came for free: share them with grad_* methods
            ctx.shared.grads = GradFeatures(row_feats, queries, row_losses, query_losses, feat.shapes)
        return scores.numpy()
