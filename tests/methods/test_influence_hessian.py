"""hessian_influence on the planted run: planted rows score above the rest with the exact
Hessian of a small weight set (fails if the sign flips); self-influence is positive."""

from __future__ import annotations

import numpy as np
from planted_gap import planted_gap

from datablame.methods import get_method

V_PROJ = r"layers\.1\.self_attn\.v_proj$"  # 24 x 48 = 1152 weights of the planted model


def test_planted_rows_score_higher_with_exact_hessian(planted_run):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    # CG with damping = mean eigenvalue: ~20 iterations on CPU (explicit H of 1152 weights takes minutes)
    m = get_method("hessian_influence", pattern=V_PROJ, solver="cg", damping_scale=1.0, cg_tol=1e-2, batch_size=64)
    m.fit(inputs)
    scores = m.score(inputs)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus)) and np.isfinite(scores).all()
    assert m.info["solver"] == "cg" and m.info["params"] == 1152 and m.info["residual"] < 1e-2
    assert planted_gap(scores, inputs, truth) > 1.0
