"""TracIn over saved checkpoints (TracInCP, Pruthi et al. 2020).

    score[q, r] = sum_c w_c <g_q^c, g_r^c>

g^c are the projected loss gradients (mean completion-token NLL, the `gradient_features`
modules and projection) at checkpoint c, from `checkpoint_features`. A gradient step of
size η on row r changes the query loss by about -η <g_q, g_r>, so each term is the
first-order decrease of the query's loss that row r caused around checkpoint c.

Sign: higher = the row pushed the query's loss down. Unit (default `weighting: lr`,
w_c = η_c, the mean learning rate of the steps leading to checkpoint c, see
`checkpoint_features`): nats of query-loss decrease, summed over checkpoints, for one
full-learning-rate step on the row alone at each checkpoint (divide by the batch size for
the row's share of a real step). `weighting: lr_x_steps` multiplies by the number of steps
the checkpoint stands for (uneven checkpoint spacing); `uniform` uses w_c = 1 (nats per
unit learning rate).

Options (`attribution.options.tracin`): checkpoints ("all" | "last" | N = last N | list of
steps), weighting ("lr" | "lr_x_steps" | "uniform").
"""

from __future__ import annotations

import numpy as np
import torch

from datablame.errors import DatablameError
from datablame.methods.base import AttributionInputs, Method, register
from datablame.methods.checkpoint_features import (
    CheckpointInfo,
    checkpoint_features,
    select_checkpoints,
)
from datablame.store.rows import dot_scores

WEIGHTINGS = ("lr", "lr_x_steps", "uniform")


def checkpoint_weight(info: CheckpointInfo, weighting: str) -> float:
    """w_c of one checkpoint under a weighting scheme (shared with LESS)."""
    if weighting == "lr":
        return info.lr
    if weighting == "lr_x_steps":
        return info.lr * info.steps
    return 1.0


@register
class TracIn(Method):
    name = "tracin"
    unit = "nats of query-loss decrease summed over checkpoints (lr-weighted gradient dot products)"
    cost = "one forward+backward per row per checkpoint (cached on disk per checkpoint)"

    def __init__(self, checkpoints: str | int | list[int] = "all", weighting: str = "lr") -> None:
        if weighting not in WEIGHTINGS:
            raise DatablameError(f"unknown tracin weighting {weighting!r}", f"choose one of {list(WEIGHTINGS)}")
        self.checkpoints = checkpoints
        self.weighting = weighting

    def fit(self, inputs: AttributionInputs) -> None:
        for info in select_checkpoints(inputs, self.checkpoints):
            checkpoint_features(inputs, info)

    def score(self, inputs: AttributionInputs) -> np.ndarray:
        infos = select_checkpoints(inputs, self.checkpoints)
        total = torch.zeros(len(inputs.query_rows), len(inputs.rows), dtype=torch.float64)
        for info in infos:
            g = checkpoint_features(inputs, info)
            total += checkpoint_weight(info, self.weighting) * torch.from_numpy(dot_scores(g.queries, g.rows))
        return total.numpy()
