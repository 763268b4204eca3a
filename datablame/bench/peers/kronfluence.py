"""kronfluence peer: EK-FAC influence from the kronfluence library (pairwise scores).

The library is driven by our registered method `kronfluence`
(`datablame/methods/kronfluence.py`: `Analyzer.fit_all_factors` with EK-FAC
factors on the trained model, then `compute_pairwise_scores` of the queries against the
training rows, with the run's modules and loss masks). This adapter only runs that method
as a peer -- timed and memory-measured like the others -- so the benchmark table has
kronfluence next to our own `ekfac` (BENCHMARKS "Agreement with peers": Spearman >= 0.95
expected). Sign and unit are the method's (see its module docstring); options are passed
to it unchanged (`--peer-option kronfluence.<key>=<value>`).

When the method is not registered (the backend module is missing) or the library cannot
be imported, the benchmark gets a clear "not available" entry instead.
"""

from __future__ import annotations

import importlib

import numpy as np

from datablame.bench.peers import Peer, register_peer
from datablame.features.context import AttributionContext
from datablame.methods import REGISTRY, run_method

METHOD = "kronfluence"


def _ensure_registered() -> None:
    if METHOD not in REGISTRY:
        try:
            importlib.import_module("datablame.methods.kronfluence")
        except ModuleNotFoundError as err:
            if err.name != "datablame.methods.kronfluence":
                raise


@register_peer
class KronfluencePeer(Peer):
    name = "kronfluence"
    library = "kronfluence"
    entry_point = "datablame method 'kronfluence' (Analyzer.fit_all_factors EK-FAC + compute_pairwise_scores)"
    reference = "ekfac"

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        _ensure_registered()
        if METHOD not in REGISTRY:
            return "the 'kronfluence' method is not registered (datablame/methods/kronfluence.py missing)"
        return None

    def scores(self, inputs: AttributionContext) -> np.ndarray:
        _ensure_registered()
        run = run_method(inputs, METHOD, self.options)
        self.sign = run.method.sign
        return run.scores
