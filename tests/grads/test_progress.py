"""Long stages announce their time (issue 15 item 5): after the first batches or jobs, the
measured seconds per row/model x what is left is logged, and the progress bars know their total
(so tqdm shows an ETA)."""

from __future__ import annotations

import logging
import time

import pytest
from pipeline_config import small_config

import datablame.grads.progress as progress
import datablame.verify.sweep as sweep
from datablame.config import RayConfig
from datablame.grads.featurizer import GradientFeaturizer
from datablame.grads.progress import EtaLog, fmt_seconds
from datablame.verify.retrain import RetrainContext, RetrainJob


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_estimate_is_seconds_per_unit_times_what_is_left(caplog):
    clock = FakeClock()
    eta = EtaLog("training-row gradients", 1000, "row", after=20, min_total_s=0, clock=clock)
    clock.t += 3.0
    assert eta.update(10) is None  # not enough measured yet
    clock.t += 1.0
    with caplog.at_level(logging.INFO, logger="datablame"):
        line = eta.update(20)  # 4 s for 20 rows: 0.2 s/row, 980 left -> 196 s more, 200 s in all
        assert eta.update(40) is None  # logged once
    assert line == ("training-row gradients: 0.2 s per row over the first 20 of 1,000 rows; 980 left: "
                    "about 3 min 16 s more (about 3 min 20 s in all)")
    assert [r.getMessage() for r in caplog.records] == [line]


def test_short_or_finished_stages_stay_quiet(caplog):
    clock = FakeClock()
    eta = EtaLog("x", 10, "row", after=2, clock=clock)  # default threshold MIN_TOTAL_S
    clock.t += 0.01
    with caplog.at_level(logging.INFO, logger="datablame"):
        assert eta.update(2) is None  # 0.05 s in all: not worth a line
        done = EtaLog("y", 4, "model", after=4, min_total_s=0, clock=clock)
        assert done.update(4) is None  # nothing left to estimate
    assert not caplog.records


@pytest.mark.parametrize("s,text", [(0.42, "0.4 s"), (42.4, "42 s"), (190, "3 min 10 s"), (7500, "2 h 05 min")])
def test_fmt_seconds(s, text):
    assert fmt_seconds(s) == text


def test_featurizer_logs_rows_estimate_after_two_batches(tiny_llama, toy_encoded, caplog, monkeypatch):
    from datablame.config import ModuleSelection, ProjectionConfig
    from datablame.grads import FactoredProjection
    from datablame.grads.modules import select_modules

    monkeypatch.setattr(progress, "MIN_TOTAL_S", 0.0)
    modules = select_modules(tiny_llama, ModuleSelection())
    feat = GradientFeaturizer(tiny_llama, modules, FactoredProjection(ProjectionConfig(k_in=8, k_out=8)))
    with caplog.at_level(logging.INFO, logger="datablame"):
        feat.featurize(toy_encoded, batch_size=2, desc="training-row gradients")  # 6 rows: estimate after 4
        feat.featurize(toy_encoded, batch_size=2, desc=False)  # queries: silent
    lines = [r.getMessage() for r in caplog.records if "per row" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("training-row gradients: ")
    assert "over the first 4 of 6 rows; 2 left: about" in lines[0]


def test_sweep_logs_models_estimate_after_the_first_job(tmp_path, caplog, monkeypatch):
    cfg = small_config(tmp_path / "r")
    ctx = RetrainContext(config=cfg.model_dump(mode="json"), run_dir=str(tmp_path), base_model=None,
                         corpus_fingerprint="fp", n_rows=10, queries=(("q0", "P?", " A."),), generate=False)

    def fake_execute(ctx, job, threads=None):
        time.sleep(0.02)
        return {"kind": job.kind, "seed": job.seed, "loss": [0.0]}

    monkeypatch.setattr(sweep, "execute", fake_execute)
    jobs = [RetrainJob(s, removed=(s,)) for s in range(4)]
    with caplog.at_level(logging.INFO, logger="datablame"):
        sweep.run_jobs(ctx, jobs, tmp_path / "sweep", RayConfig(runner="serial"), desc="LDS subsets",
                       progress=False)
    lines = [r.getMessage() for r in caplog.records if "per model" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("LDS subsets: ") and "over the first 1 of 4 models; 3 left: about" in lines[0]
