"""Attribution methods behind one protocol (one module per method).

Every method returns scores[q, r]: higher = training row r pushed query q's loss down
(more responsible for the behaviour). Each class documents its unit and cost.
Importing a method module registers it; the list below is the whole registry.
"""

from datablame.methods import (  # noqa: F401  (imports register the methods)
    activation_gradient,
    activation_similarity,
    bm25,
    causal_patching,
    datainf,
    datamodels,
    delta_h,
    delta_h_grad,
    diag_influence,
    ekfac_influence,
    embedding_cosine,
    grad_align,
    grad_tokenwise,
    hessian_influence,
    kfac_influence,
    kronfluence_backend,
    less,
    llm_judge,
    random_baseline,
    tracin,
    trak,
)
from datablame.methods.base import (
    REGISTRY,
    AttributionInputs,
    Method,
    MethodOptions,
    describe_all,
    get_method,
    method_options,
    register,
)
from datablame.methods.grad_align import GradFeatures, gradient_features

__all__ = ["REGISTRY", "AttributionInputs", "GradFeatures", "Method", "MethodOptions", "describe_all", "get_method",
           "gradient_features", "method_options", "register"]
