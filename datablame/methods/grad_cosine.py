"""Gradient alignment by cosine (seed 003): the direction of `grad_dot` with magnitudes removed.

A row whose gradient points the same way as the query's lowers the query's loss when the model
takes a step on it; the cosine ignores how large either gradient is (unitless, in [-1, 1]).
"""

from __future__ import annotations

from datablame.methods.base import register
from datablame.methods.grad_dot import GradDot


@register
class GradCosine(GradDot):
    name = "grad_cosine"
    unit = "cosine similarity of loss gradients, unitless in [-1, 1]"
    normalize = True
