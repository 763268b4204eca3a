"""Gradient alignment by dot product (seed 003): <g_q, g_r> of projected loss gradients.

One SGD step of size lr on row r changes the query loss by about -lr * <g_q, g_r>, so the
score is the first-order decrease of the query loss (nats) per unit learning rate.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from datablame.features.ann import ann_scores, plan_search
from datablame.features.context import AttributionContext
from datablame.features.gradients import gradient_features
from datablame.methods.base import Method, register
from datablame.store.rows import dot_scores


@register
class GradDot(Method):
    name = "grad_dot"
    family = "gradient"
    measures_behaviour = True  # its query features come from features.gradients.measure_queries
    unit = "nats of query loss decrease per unit learning rate (first order)"
    cost = "one forward+backward per row (activation gradients only)"
    normalize: ClassVar[bool] = False  # grad_cosine: unit-normalise both gradients first

    def score(self, ctx: AttributionContext) -> np.ndarray:
        g = gradient_features(ctx)
        plan = plan_search(ctx, "cosine" if self.normalize else "dot", g.rows)
        if plan.path == "ann":  # attribution.store.search: FAISS candidates, re-scored exactly
            s = ctx.attribution.store
            scores, self.search_info = ann_scores(plan, g.queries, g.rows, normalize=self.normalize,  # type: ignore[arg-type]
                                                  candidates=s.ann_candidates, nprobe=s.nprobe,
                                                  recall_queries=s.ann_recall_queries)
            return scores
        self.search_info = plan.as_dict()
        return dot_scores(g.queries, g.rows, normalize=self.normalize)
