"""Attribution methods behind one protocol (one module per method).

Every method returns scores[q, r]: higher = training row r pushed query q's loss down
(more responsible for the behaviour). Each class documents its unit and cost.
"""

from datablame.methods import grad_align  # noqa: F401  (registers grad_dot / grad_cosine)
from datablame.methods.base import REGISTRY, AttributionInputs, Method, get_method, register
from datablame.methods.grad_align import GradFeatures, gradient_features

__all__ = ["REGISTRY", "AttributionInputs", "GradFeatures", "Method", "get_method", "gradient_features", "register"]
