"""Sweeps resume: a sweep killed mid-way (a Ray sweep in a killed process, or a failing job)
is finished by the next call without retraining the subsets that were done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import datablame.verify.sweep as sweep
from datablame.config import RayConfig
from datablame.errors import DatablameError
from datablame.verify.retrain import RetrainContext, RetrainJob, job_key

SERIAL = RayConfig(runner="serial")


def _ctx(cfg, tmp_path) -> RetrainContext:
    return RetrainContext(config=cfg.model_dump(mode="json"), run_dir=str(tmp_path), base_model=None,
                          corpus_fingerprint="fp", n_rows=10, queries=(("q0", "P?", " A."),), generate=False)


def test_job_key_is_content(verify_run, tmp_path):
    cfg, _ = verify_run
    ctx = _ctx(cfg, tmp_path)
    a = job_key(ctx, RetrainJob(0, removed=(3, 1), kind="top-k", tags={"method": "x"}))
    assert a == job_key(ctx, RetrainJob(0, removed=(1, 3), kind="control"))  # why it runs: not in the key
    assert a != job_key(ctx, RetrainJob(1, removed=(1, 3)))
    assert a != job_key(ctx, RetrainJob(0, removed=(1, 4)))
    assert a != job_key(ctx, RetrainJob(0, flipped=((1, 2), (3, 4))))
    other = RetrainContext(**{**ctx.__dict__, "queries": (("q0", "P?", " B."),)})
    assert a != job_key(other, RetrainJob(0, removed=(1, 3)))  # other measurement: other job


def test_failing_job_keeps_finished_ones_and_resumes(verify_run, tmp_path, monkeypatch):
    cfg, _ = verify_run
    ctx = _ctx(cfg, tmp_path)
    jobs = [RetrainJob(s, removed=(s,)) for s in range(5)]
    calls: list[int] = []

    def fake_execute(ctx, job, threads=None):
        calls.append(job.seed)
        if job.seed == 2 and len(calls) == 3:
            raise DatablameError("disk full", "free space")
        return {"kind": job.kind, "seed": job.seed, "loss": [float(job.seed)]}

    monkeypatch.setattr(sweep, "execute", fake_execute)
    with pytest.raises(DatablameError, match="disk full"):
        sweep.run_jobs(ctx, jobs, tmp_path, SERIAL, progress=False)
    assert len(list((tmp_path / "jobs").glob("*.json"))) == 2
    calls.clear()
    out = sweep.run_jobs(ctx, jobs, tmp_path, SERIAL, progress=False)
    assert calls == [2, 3, 4]  # the two finished jobs were not run again
    assert (out.trained, out.reused) == (3, 2)
    assert [out.record(i)["loss"] for i in range(5)] == [[0.0], [1.0], [2.0], [3.0], [4.0]]
    calls.clear()
    again = sweep.run_jobs(ctx, [*jobs, jobs[0]], tmp_path, SERIAL, progress=False)
    assert calls == [] and again.trained == 0 and again.reused == 5


_SWEEP = """
import json, sys
from datablame.config import RayConfig, parse_config
from datablame.verify import lds
cfg = parse_config(json.loads(sys.argv[1]))
lds(cfg, ["grad_dot"], num_subsets=4, ray=RayConfig(num_cpus=1), progress=False)
"""


def test_killed_ray_sweep_resumes_without_retraining(verify_run, monkeypatch):
    cfg, _ = verify_run
    jobs_dir = Path(cfg.output.dir) / "lds" / "jobs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-c", _SWEEP, json.dumps(cfg.model_dump(mode="json"))],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not list(jobs_dir.glob("*.json")):
            assert proc.poll() is None, f"the sweep ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no subset finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started
        proc.wait()
    finished = {p.stem: p.stat().st_mtime_ns for p in jobs_dir.glob("*.json")}
    assert 1 <= len(finished) < 4, "the kill came after the sweep had finished"

    executed: list[str] = []
    real = sweep.execute

    def counting_execute(ctx, job, threads=None):
        executed.append(job_key(ctx, job))
        return real(ctx, job, threads=threads)

    monkeypatch.setattr(sweep, "execute", counting_execute)
    from datablame.verify import lds

    rep = lds(cfg, ["grad_dot", "datamodels"], num_subsets=4, ray=SERIAL, progress=False)
    assert rep.data["design"]["trained"] == 4 - len(finished) == len(executed)
    assert rep.data["design"]["reused"] == len(finished)
    assert not set(executed) & set(finished)  # no finished subset was retrained
    for key, mtime in finished.items():  # nor rewritten
        assert (jobs_dir / f"{key}.json").stat().st_mtime_ns == mtime
    table = {r["method"]: r for r in rep.data["table"]}
    assert set(table) == {"grad_dot", "datamodels"} and "lds" in table["grad_dot"]
    assert rep.paths["json"].is_file() and rep.paths["plot"].is_file()
    executed.clear()
    lds(cfg, ["grad_dot"], num_subsets=4, ray=SERIAL, progress=False)
    assert executed == []
