"""Scores of another registered method inside one run (cached in `inputs.cache`).

Used where a method leans on a second one: the LLM judge's candidate set and the reference
signal that learns convex layer weights (`layer_aggregation`). Computed at most once per
run, method and options.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from datablame.errors import DatablameError
from datablame.methods.base import REGISTRY, AttributionInputs, check_scores_shape, get_method


def scores_of(inputs: AttributionInputs, name: str, options: dict[str, Any] | None = None, *, by: str) -> np.ndarray:
    """Scores [Q, R] of method `name` (options: `attribution.options.<name>` unless given)."""
    if name == by:
        raise DatablameError(f"{by} cannot use its own scores as a reference", f"name another method than {by}")
    if name not in REGISTRY:
        raise DatablameError(
            f"{by}: unknown method {name!r} to take scores from", f"choose one of {sorted(REGISTRY)}"
        )
    opts = dict(inputs.attribution.options.get(name, {}) if options is None else options)
    key = ("method_scores", name, json.dumps(opts, sort_keys=True, default=str))
    if key not in inputs.cache:
        m = get_method(name, **opts)
        m.fit(inputs)
        inputs.cache[key] = np.asarray(m.score(inputs), dtype=np.float64)
        check_scores_shape(name, inputs.cache[key], len(inputs.queries), len(inputs.corpus))
    return inputs.cache[key]
