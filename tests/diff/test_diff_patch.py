"""Patching against controls (datablame.diff.patching, final): the patched fine-tune trains on
exactly the kept rows, the random control removes K other rows, both controls are in every
comparison, the verdict rule on hand-made counts, a rerun skips finished arms, bad settings
are refused naming the field."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pydantic import ValidationError

from datablame.config_diff import DiffPatchSettings, DiffSettings
from datablame.data.corpus import Corpus, Row
from datablame.diff.patching import (
    BETTER,
    NOT_BETTER,
    choose_alpha,
    compare_arms,
    method_removals,
    newcombe_interval,
    plan_jobs,
    verdict,
)
from datablame.errors import DatablameError


def _corpus(n: int = 30) -> Corpus:
    return Corpus([Row(f"r{i}", f"Q{i}?", f"A{i}.") for i in range(n)], name="t")


def _blame(ranking: dict[str, list[str]]) -> dict:
    return {"ranking": {m: [{"row_id": r, "blame": 1 - i / len(rows)} for i, r in enumerate(rows)]
                        for m, rows in ranking.items()}}


def test_newcombe_interval_matches_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10
    for (h1, n1, h2, n2), (lo, hi) in {(56, 70, 48, 80): (0.0524, 0.3339), (9, 10, 3, 10): (0.1705, 0.8090),
                                       (6, 7, 2, 7): (0.0582, 0.8062), (5, 56, 0, 29): (-0.0381, 0.1926)}.items():
        d, low, high = newcombe_interval(h1, n1, h2, n2)
        assert d == pytest.approx(h1 / n1 - h2 / n2)
        assert (round(low, 4), round(high, 4)) == (lo, hi)


def test_verdict_needs_a_lower_rate_and_an_interval_below_zero_against_both_controls():
    assert verdict((5, 200), (60, 200), (70, 200))["verdict"] == BETTER
    # lower than both, but the difference to the baseline is within noise
    v = verdict((50, 200), (58, 200), (120, 200))
    assert v["verdict"] == NOT_BETTER and v["vs"]["baseline"]["ci_low"] < 0 < v["vs"]["baseline"]["ci_high"]
    assert v["vs"]["random"]["ci_high"] < 0
    # clearly below the baseline but not below the random control
    assert verdict((5, 200), (60, 200), (4, 200))["verdict"] == NOT_BETTER
    assert verdict((0, 0), (60, 200), (70, 200))["verdict"] == NOT_BETTER  # nothing measured


def _record(arm: str, kind: str, seed: int, hits: int, n: int = 40, removed=()) -> dict:
    return {"arm": arm, "kind": kind, "seed": seed, "n_removed": len(removed), "removed": list(removed),
            "pooled": {"hits": hits, "n": n, "rate": hits / n}, "per_prompt": [{"prompt_id": "p", "hits": hits, "n": n,
                                                                               "rate": hits / n}]}


def test_comparison_pools_seeds_and_always_holds_both_controls():
    recs = [_record("baseline", "baseline", s, h) for s, h in ((0, 20), (1, 24))]
    recs += [_record("random", "random", s, h, removed=["r1"]) for s, h in ((0, 22), (1, 18))]
    recs += [_record("m", "method", s, h, removed=["r0"]) for s, h in ((0, 1), (1, 3))]
    cmp = compare_arms(recs, before={"alpha": 4.0, "rate": 0.5})
    arms = {a["arm"]: a for a in cmp["arms"]}
    assert [a["arm"] for a in cmp["arms"]][:2] == ["baseline", "random"]
    assert (arms["m"]["hits"], arms["m"]["n"]) == (4, 80) and [s["rate"] for s in arms["m"]["seeds"]] == [1 / 40, 3 / 40]
    assert set(cmp["verdicts"]) == {"m"} and set(cmp["verdicts"]["m"]["vs"]) == {"baseline", "random"}
    assert cmp["verdicts"]["m"]["verdict"] == BETTER and cmp["verdicts"]["m"]["vs"]["random"]["seeds_lower"] == "2/2"
    for missing in ("baseline", "random"):
        with pytest.raises(DatablameError, match="control arm"):
            compare_arms([r for r in recs if r["arm"] != missing])


def test_random_control_removes_exactly_k_other_rows_per_seed():
    corpus = _corpus(30)
    settings = DiffPatchSettings(top_k=5, seeds=3)
    removals = method_removals(_blame({"a": [f"r{i}" for i in range(20)], "b": [f"r{i}" for i in range(10, 30)]}),
                               corpus, settings)
    assert removals == {"a": [f"r{i}" for i in range(5)], "b": [f"r{i}" for i in range(10, 15)]}
    jobs = plan_jobs(corpus, removals, settings)
    assert len(jobs) == 3 * 4
    for seed in range(3):
        mine = {j.arm: j for j in jobs if j.seed == seed}
        assert set(mine) == {"baseline", "random", "a", "b"}  # both controls with every seed
        assert mine["baseline"].removed == ()
        rnd = set(mine["random"].removed)
        assert len(rnd) == len(mine["random"].removed) == 5
        assert not rnd & (set(removals["a"]) | set(removals["b"]))
    draws = {tuple(j.removed) for j in jobs if j.arm == "random"}
    assert len(draws) > 1  # a new draw per seed
    assert plan_jobs(corpus, removals, settings) == jobs  # seeded


def test_bad_patch_settings_name_the_field():
    corpus = _corpus(10)
    blame = _blame({"a": [f"r{i}" for i in range(6)]})
    with pytest.raises(DatablameError, match=r"diff.patch.top_k \(10\).*fine-tuning set of 10 rows") as err:
        method_removals(blame, corpus, DiffPatchSettings(top_k=10))
    assert "at most 9" in err.value.fix
    with pytest.raises(DatablameError, match=r"diff.patch.top_k \(8\) is larger than the candidate pool of 6"):
        method_removals(blame, corpus, DiffPatchSettings(top_k=8))
    with pytest.raises(DatablameError, match="diff.patch.methods"):
        method_removals(blame, corpus, DiffPatchSettings(top_k=2, methods=["zzz"]))
    with pytest.raises(DatablameError, match="no full ranking"):
        method_removals({"blame": {}}, corpus, DiffPatchSettings(top_k=2))
    with pytest.raises(ValidationError, match="diff.patch.seeds must be at least 1"):
        DiffSettings.model_validate({"patch": {"seeds": 0}})
    with pytest.raises(ValidationError, match="diff.patch.alpha"):
        DiffSettings.model_validate({"patch": {"alpha": -1}})
    assert choose_alpha({"pooled": [{"alpha": 0.0, "rate": 0.0}, {"alpha": 2.0, "rate": 0.5},
                                    {"alpha": 4.0, "rate": 0.5}]}, None) == 2.0
    assert choose_alpha({"pooled": []}, 1.5) == 1.5


# --- with the tiny demo models ----------------------------------------------------------------

@pytest.fixture(scope="module")
def patched(demo_models, tmp_path_factory, monkeypatch_module):
    """Three tiny jobs (baseline, random, two methods that remove the planted rows; one seed, 4
    steps, 4 samples per prompt), each fine-tune's training rows recorded by a spy."""
    import datablame.train as train_pkg
    from datablame.api_diff_patch import run_patch
    from datablame.diff.pair import _load_one
    from datablame.diff.scan import ScanSettings, load_prompts

    d = demo_models
    out = tmp_path_factory.mktemp("patch")
    seen: list[list[str]] = []
    real = train_pkg.finetune

    def spy(model, tok, corpus, *a, **k):
        seen.append([r.row_id for r in (corpus if k.get("indices") is None else [corpus[i] for i in k["indices"]])])
        return real(model, tok, corpus, *a, **k)

    monkeypatch_module.setattr(train_pkg, "finetune", spy)
    ranking = d.planted_row_ids + [r.row_id for r in d.corpus if r.row_id not in d.planted_row_ids]
    # two methods that remove the same rows share one job (trained and scanned once)
    blame = {**_blame({"planted_first": ranking, "same_rows": ranking}), "queries": [], "top_k_per_query": {}}
    scan = {"pooled": [{"alpha": 4.0, "hits": 10, "n": 20, "rate": 0.5}], "cells": []}
    settings = DiffPatchSettings(top_k=4, seeds=1, steps=4, batch_size=8, learning_rate=1e-3)
    scan_settings = ScanSettings.model_validate({"alphas": [4.0], "n_samples": 4, "classifier": d.classifier(),
                                                 "sampling": {"max_new_tokens": 6}}).model_dump(mode="json")
    kw = dict(out=out, corpus=d.corpus, blame=blame, scan=scan, settings=settings, scan_settings=scan_settings,
              prompts=load_prompts(d.prompts_file),
              before=_load_one(str(d.before_dir), device="cpu", dtype="float32"),
              after=_load_one(str(d.after_dir), device="cpu", dtype="float32"), model_cfg=d.model_cfg, progress=False)
    doc = run_patch(**kw)
    return d, doc, seen, kw, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _records(out) -> list[dict]:
    from datablame.layout import DiffLayout

    return [json.loads(p.read_text()) for p in sorted(DiffLayout(out).patch_jobs_dir.glob("*.json"))]


def test_patched_finetunes_train_on_exactly_the_kept_rows(patched):
    d, doc, seen, _, out = patched
    recs = _records(out)
    assert len(recs) == len(seen) == 3 and doc["trained"] == 3
    all_ids = [r.row_id for r in d.corpus]
    for rec in recs:
        used = next(s for s in seen if set(s) == set(rec["trained_row_ids"]))
        assert not set(used) & set(rec["removed"])
        assert sorted(used) == sorted(set(all_ids) - set(rec["removed"]))
        assert len(used) == len(all_ids) - (0 if rec["arm"] == "baseline" else 4)
    by_arm = {r["arm"]: r for r in recs}
    assert set(by_arm["planted_first"]["removed"]) == set(d.planted_row_ids)
    assert not set(by_arm["random"]["removed"]) & set(d.planted_row_ids)
    assert by_arm["baseline"]["pooled"]["n"] == 4 * 2  # 4 samples x 2 prompts at the patch alpha


def test_patch_outputs_hold_both_controls(patched):
    _, doc, _, kw, out = patched
    from datablame.diff.final import write_final
    from datablame.layout import DiffLayout

    rows = list(csv.DictReader(io.StringIO(DiffLayout(out).patching_csv.read_text())))
    pooled = {r["arm"]: r for r in rows if r["seed"] == "all"}
    assert set(pooled) == {"baseline", "random", "planted_first", "same_rows"}
    assert pooled["same_rows"]["rate"] == pooled["planted_first"]["rate"]
    assert pooled["baseline"]["verdict"] == pooled["random"]["verdict"] == "control"
    assert pooled["planted_first"]["verdict"] in (BETTER, NOT_BETTER)
    assert DiffLayout(out).patching_png.stat().st_size > 5000
    scan = {"pooled": [{"alpha": 0.0, "hits": 0, "n": 8, "rate": 0.0, "ci_low": 0.0, "ci_high": 0.3},
                       {"alpha": 4.0, "hits": 4, "n": 8, "rate": 0.5, "ci_low": 0.2, "ci_high": 0.8}], "cells": []}
    blame = {**kw["blame"], "queries": [{"query_id": "q", "prompt": "Q:", "completion": " purple", "prompt_id": "p",
                                         "alpha": 4.0, "sample": 0, "reason": "r"}],
             "top_k_per_query": {"planted_first": [["plant-0", "ft-rivers-0-0"]]}}
    files = write_final(DiffLayout(out), scan, blame, doc)
    final = json.loads(DiffLayout(out).final_json.read_text())
    assert {a["arm"] for a in final["patch"]["comparison"]["arms"]} >= {"baseline", "random"}
    md = DiffLayout(out).case_study_md.read_text()
    assert "plant-0" in md and "The purple walrus knows best." in md and "| baseline |" in md and "| random |" in md
    assert set(files) >= {"final_png", "case_study", "final_json"}


def test_a_rerun_skips_finished_arms_and_reuses_a_trained_model(patched, monkeypatch):
    from datablame.api_diff_patch import run_patch
    from datablame.layout import DiffLayout

    _, doc, _, kw, out = patched

    def boom(*a, **k):
        raise AssertionError("a finished arm was trained or scanned again")

    monkeypatch.setattr("datablame.train.finetune", boom)
    monkeypatch.setattr("datablame.diff.patching.run_scan", boom)
    again = run_patch(**kw)
    assert again["trained"] == 0 and again["reused"] == 3
    assert again["comparison"] == doc["comparison"]
    # a lost job record: its LoRA model is reloaded (not retrained) and its finished scan reused
    first = sorted(DiffLayout(out).patch_jobs_dir.glob("*.json"))[0]
    first.unlink()
    monkeypatch.undo()
    monkeypatch.setattr("datablame.train.finetune", boom)
    redo = run_patch(**kw)
    assert redo["trained"] == 1 and redo["comparison"] == doc["comparison"]
    assert json.loads(first.read_text())["train_reused"] is True
