"""Attribution methods behind one protocol (one module per method).

Every method returns scores[q, r]: higher = training row r pushed query q's loss down
(more responsible for the behaviour). Each class documents its unit and cost.
Importing a method module registers it; the list below is the whole registry. Each file
here is one method named after it; what methods share lives in `datablame.features`, and
`run_method` (base.py) is the one way to run one (docs/architecture.md).
"""

from datablame.features.context import AttributionContext
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
    ekfac,
    embedding_cosine,
    fused,
    grad_cosine,
    grad_dot,
    grad_tokenwise,
    hessian_influence,
    kfac,
    kronfluence,
    less,
    llm_judge,
    random,
    tracin,
    trak,
)
from datablame.methods.base import (
    REGISTRY,
    Method,
    MethodOptions,
    MethodRun,
    describe_all,
    get_method,
    method_options,
    register,
    run_method,
)

__all__ = ["REGISTRY", "AttributionContext", "Method", "MethodOptions", "MethodRun", "describe_all", "get_method",
           "method_options", "register", "run_method"]
