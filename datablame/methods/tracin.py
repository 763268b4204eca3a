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

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, StrictInt

from datablame.features.checkpoints import CheckpointInfo, checkpoint_features, select_checkpoints
from datablame.features.context import AttributionContext
from datablame.methods.base import Method, MethodOptions, register
from datablame.store.rows import dot_scores

WEIGHTINGS = ("lr", "lr_x_steps", "uniform")
# which checkpoints a method uses: "all", "last", the last N, or a list of steps (`select_checkpoints`)
Checkpoints = Literal["all", "last"] | Annotated[StrictInt, Field(ge=1)] | Annotated[list[StrictInt], Field(min_length=1)]


class CheckpointOptions(MethodOptions):
    """Options of the methods that sum over saved checkpoints (tracin, less)."""

    checkpoints: Checkpoints = Field("all", description="'all', 'last', N (the last N) or a list of steps")
    weighting: Literal[WEIGHTINGS] = Field("lr", description="w_c per checkpoint: its mean learning rate (lr), "
                                           "x the steps it stands for (lr_x_steps), or 1 (uniform)")


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
    family = "gradient"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = "nats of query-loss decrease summed over checkpoints (lr-weighted gradient dot products)"
    cost = "one forward+backward per row per checkpoint (cached on disk per checkpoint)"

    Options = CheckpointOptions

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.checkpoints = self.options.checkpoints
        self.weighting = self.options.weighting

    def fit(self, ctx: AttributionContext) -> None:
        for info in select_checkpoints(ctx, self.checkpoints):
            checkpoint_features(ctx, info)

    def score(self, ctx: AttributionContext) -> np.ndarray:
        infos = select_checkpoints(ctx, self.checkpoints)
        total = torch.zeros(len(ctx.queries), len(ctx.rows), dtype=torch.float64)
        for info in infos:
            g = checkpoint_features(ctx, info)
            total += checkpoint_weight(info, self.weighting) * torch.from_numpy(dot_scores(g.queries, g.rows))
        return total.numpy()
