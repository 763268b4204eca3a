"""Per-layer scores -> one score per (query, row): mean, top-k mean, or convex weights.

Layer-wise methods (`activation_gradient`, `delta_h`, `delta_h_grad`, `causal_patching`)
score every selected layer separately, giving `[L, Q, R]`, and combine them here. All
three combinations are convex (weights >= 0, summing to 1), so the result keeps the unit of
the per-layer scores.

- "mean": the plain average over layers.
- "topk": for each (query, row), the mean of its `top_k` highest layer scores (a row that
  matches strongly at a few layers is not diluted by the others).
- "learned": weights w on the simplex (softmax-parametrised, Adam, fixed steps, start
  uniform) that maximise the mean over queries of the Pearson correlation, across rows,
  between sum_l w_l s_l[q] and a *reference* method's scores of the same run (default
  `grad_cosine`). No ground truth is used, so this is safe on benchmarks; it borrows the
  reference's judgment of which layers carry the signal. Fixed weights can be given
  instead with `layer_weights` (normalised to sum 1).
The weights actually used are returned with the scores; methods write them (with their other
settings) to `<work_dir>/<method>/info.json` via `save_info`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.features.context import AttributionContext
from datablame.layout import AttributionLayout
from datablame.utils.io import atomic_write_json

AGGREGATES = ("mean", "topk", "learned")


def fit_convex_weights(per_layer: np.ndarray, reference: np.ndarray, *, steps: int = 300, lr: float = 0.05) -> np.ndarray:
    """Simplex weights [L] maximising mean_q corr_r(sum_l w_l per_layer[l, q], reference[q])."""
    s = torch.as_tensor(per_layer, dtype=torch.float64)
    ref = torch.as_tensor(reference, dtype=torch.float64)
    ref = ref - ref.mean(dim=1, keepdim=True)
    ref = ref / ref.norm(dim=1, keepdim=True).clamp_min(1e-12)
    logits = torch.zeros(s.shape[0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        w = torch.softmax(logits, dim=0)
        comb = torch.einsum("l,lqr->qr", w, s)
        comb = comb - comb.mean(dim=1, keepdim=True)
        comb = comb / comb.norm(dim=1, keepdim=True).clamp_min(1e-12)
        loss = -(comb * ref).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(logits.detach(), dim=0).numpy()


@dataclass
class LayerAggregation:
    """How a method combines its per-layer scores (built from its options)."""

    how: str = "mean"
    top_k: int = 2
    layer_weights: Sequence[float] | None = None
    reference: str = "grad_cosine"
    method: str = "?"

    def __post_init__(self) -> None:
        fix = f"set attribution.options.{self.method}.aggregate to one of {list(AGGREGATES)}"
        if self.how not in AGGREGATES:
            raise DatablameError(f"{self.method}: aggregate={self.how!r} is unknown", fix)
        if self.top_k < 1:
            raise DatablameError(f"{self.method}: top_k={self.top_k} must be >= 1", "use top_k: 1 or more")
        if self.layer_weights is not None and (
            any(w < 0 for w in self.layer_weights) or sum(self.layer_weights) <= 0
        ):
            raise DatablameError(
                f"{self.method}: layer_weights {list(self.layer_weights)} are not convex weights",
                "give one non-negative weight per selected layer (they are normalised to sum 1)",
            )

    def combine(
        self, per_layer: np.ndarray, reference_scores: Callable[[str], np.ndarray] | None = None
    ) -> tuple[np.ndarray, dict]:
        """[L, Q, R] -> ([Q, R] float64, info with the weights used). `reference_scores(name)`
        gives the reference method's scores of the run (needed by aggregate: learned only)."""
        n_layers = per_layer.shape[0]
        if self.layer_weights is not None:
            if len(self.layer_weights) != n_layers:
                raise DatablameError(
                    f"{self.method}: {len(self.layer_weights)} layer_weights for {n_layers} layers",
                    "give exactly one weight per selected layer",
                )
            w = np.asarray(self.layer_weights, dtype=np.float64)
            w = w / w.sum()
            return np.einsum("l,lqr->qr", w, per_layer), {"aggregate": "weights", "weights": w.tolist()}
        if self.how == "mean" or n_layers == 1:
            return per_layer.mean(axis=0), {"aggregate": "mean", "weights": [1.0 / n_layers] * n_layers}
        if self.how == "topk":
            k = min(self.top_k, n_layers)
            top = np.sort(per_layer, axis=0)[-k:]
            return top.mean(axis=0), {"aggregate": "topk", "top_k": k}
        if reference_scores is None:
            raise ValueError("learned layer weights need the reference method's scores of the run")
        ref = reference_scores(self.reference)
        w = fit_convex_weights(per_layer, ref).astype(np.float64)
        return np.einsum("l,lqr->qr", w, per_layer), {
            "aggregate": "learned", "reference": self.reference, "weights": w.tolist(),
        }


def save_info(ctx: AttributionContext, method: str, info: dict) -> None:
    """Write a method's settings and layer weights next to the run's results."""
    if ctx.work_dir is not None:
        atomic_write_json(AttributionLayout(ctx.work_dir).cache_dir(method) / "info.json", info)
