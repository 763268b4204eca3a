"""K-FAC covariances in the projected feature space, gathered while featurizing rows.

For a linear layer with projected inputs ã_t = P_in a_t and projected output gradients
g̃_t = P_out g_t, the Kronecker factors are

    A = (1/N_tok) Σ_t ã_t ã_tᵀ   (k_in x k_in)      S = (1/N_tok) Σ_t g̃_t g̃_tᵀ   (k_out x k_out)

over the real (non-padding) tokens t of the fitting rows, the same normalisation as
kronfluence. g is the gradient of each row's mean completion-token NLL, so S and the
per-row features share one scale. Accumulation is in float64 (k x k is small).

`fisher="empirical"` uses the rows' own completion tokens as labels; `"true"` samples the
labels from the model's predictive distribution at the completion positions (seeded), which
estimates the true Fisher as kronfluence does when `use_empirical_fisher=False`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from datablame.grads.featurizer import GradientFeaturizer
from datablame.models.tokenize import IGNORE, Encoded, pad_batch

Fisher = Literal["empirical", "true"]


@dataclass
class KroneckerStats:
    """Running sums of projected activation / output-gradient outer products per module."""

    a_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    s_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    n_tokens: int = 0  # real tokens seen (counted once per batch, not per module)
    n_rows: int = 0
    _first: str | None = None

    def __call__(self, name: str, a: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> None:
        """Featurizer observer: a [B,T,k_in], g [B,T,k_out] (zero on padding), mask [B,T]."""
        keep = mask.reshape(-1).bool()
        a2 = a.reshape(-1, a.shape[-1])[keep].double()
        g2 = g.reshape(-1, g.shape[-1])[keep].double()
        if name not in self.a_sum:
            self.a_sum[name] = torch.zeros(a2.shape[1], a2.shape[1], dtype=torch.float64)
            self.s_sum[name] = torch.zeros(g2.shape[1], g2.shape[1], dtype=torch.float64)
        self.a_sum[name] += (a2.T @ a2).cpu()
        self.s_sum[name] += (g2.T @ g2).cpu()
        if self._first is None:
            self._first = name
        if name == self._first:
            self.n_tokens += int(keep.sum())
            self.n_rows += int(mask.shape[0])

    def covariances(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per module (A, S), each normalised by the number of real tokens, symmetrised."""
        if self.n_tokens == 0:
            raise ValueError("no tokens were observed; nothing to fit")
        out = {}
        for name in self.a_sum:
            a = self.a_sum[name] / self.n_tokens
            s = self.s_sum[name] / self.n_tokens
            out[name] = ((a + a.T) / 2, (s + s.T) / 2)
        return out

    @property
    def tokens_per_row(self) -> float:
        return self.n_tokens / max(self.n_rows, 1)


@torch.no_grad()
def sample_labels(
    model: torch.nn.Module, encoded: Encoded, batch_size: int, pad_id: int, seed: int
) -> Encoded:
    """A copy of `encoded` whose loss tokens are drawn from the model's own predictions
    (one multinomial draw per position; prompt/ignored positions stay ignored)."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    labels: list[list[int]] = []
    try:
        for start in range(0, len(encoded), batch_size):
            ids = encoded.input_ids[start : start + batch_size]
            lab = encoded.labels[start : start + batch_size]
            b = pad_batch(ids, lab, pad_id)
            logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            # logits at t predict the token at t+1
            draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen).view(probs.shape[:2])
            for i, row in enumerate(lab):
                new = [IGNORE] * len(row)
                for t in range(1, len(row)):
                    if row[t] != IGNORE:
                        new[t] = int(draws[i, t - 1])
                labels.append(new)
    finally:
        model.train(was_training)
    return Encoded(list(encoded.input_ids), labels)


def collect_kronecker_stats(
    featurizer: GradientFeaturizer,
    encoded: Encoded,
    *,
    batch_size: int = 8,
    pad_id: int = 0,
    fisher: Fisher = "empirical",
    seed: int = 0,
    desc: str | bool = "curvature covariances",
) -> tuple[KroneckerStats, torch.Tensor, torch.Tensor]:
    """One featurize pass over `encoded` that also accumulates the K-FAC covariances.

    Returns (stats, features [N, dim], losses [N]). With `fisher="empirical"` the features
    are exactly the rows' gradient features (callers may reuse them); with `"true"` they
    are gradients for the sampled labels (what the eigenvalue correction must use then).
    """
    stats = KroneckerStats()
    if fisher == "true":
        encoded = sample_labels(featurizer.model, encoded, batch_size, pad_id, seed)
    elif fisher != "empirical":
        raise ValueError(f"fisher must be 'empirical' or 'true', not {fisher!r}")
    feats, losses = featurizer.featurize(encoded, batch_size, pad_id, desc=desc, observer=stats)
    return stats, feats, losses
