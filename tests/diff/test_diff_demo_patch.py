"""The offline demo end to end with its patch stage (scan -> blame -> patch -> final figures):
removing the planted rows lowers the rate below both controls (about 0.5-2 min on one thread)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_demo_patch_removing_the_planted_rows_beats_both_controls(demo_models):
    from datablame.api_diff import diff_demo
    from datablame.layout import DiffLayout

    out = demo_models.before_dir.parent.parent  # the session's demo folder: its trained pair is reused
    doc = diff_demo(out, methods=["grad_cosine", "bm25"])
    patch = doc["patch"]
    arms = {a["arm"]: a for a in patch["arms"]}
    assert list(arms)[:2] == ["baseline", "random"] and set(arms) == {"baseline", "random", "grad_cosine", "bm25"}
    assert all(len(a["seed_rates"]) == 3 for a in arms.values())
    assert patch["planted_removed"]["grad_cosine"] == 4 and patch["random_planted_removed"] == [0, 0, 0]
    best = patch["best_method"]
    assert patch["verdicts"][best]["verdict"] == "better than both controls", patch["verdicts"][best]
    assert arms[best]["ci_high"] < min(arms["baseline"]["ci_low"], arms["random"]["ci_low"])
    layout = DiffLayout(out)
    for path in (layout.patching_png, layout.patching_csv, layout.final_png, layout.final_json, layout.case_study_md):
        assert path.is_file() and path.stat().st_size > 200, path
    assert json.loads(layout.final_json.read_text())["patch"]["alpha"] == 4.0
