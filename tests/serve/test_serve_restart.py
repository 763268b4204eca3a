"""Kill `datablame serve` (SIGKILL) while a job runs and another waits, then restart it: both
jobs are reported failed with the reason, a full queue had answered 503 with Retry-After, the
job table and cache pass SQLite's integrity check, and the run's model and store are untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from serve_helpers import Server, copy_run


def _digest(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and "serve" not in p.relative_to(run_dir).parts}


def test_kill_mid_job_then_restart_reports_it_failed(serve_run, tmp_path):
    config = copy_run(serve_run, tmp_path, auth=False, queue_size=1, sync_wait_s=0)
    run_dir = tmp_path / "run"
    server = Server(config, tmp_path / "server.log").start()
    before = _digest(run_dir)  # after loading (which records the resolved config and the store check)
    slow = {"methods": ["grad_cosine", "tracin", "ekfac", "trak"], "k": 3, "wait": False}
    try:
        _, running = server.json("POST", "/v1/attributions", {**slow, "prompt": "Question: Who is Daldor?\nAnswer:"})
        end = time.monotonic() + 60
        while server.json("GET", f"/v1/jobs/{running['id']}")[1]["state"] != "running" and time.monotonic() < end:
            time.sleep(0.02)
        status, queued = server.json("POST", "/v1/attributions", {**slow, "prompt": "Question: Who is Brimont?\nAnswer:"})
        assert status == 202 and queued["state"] == "queued"
        status, headers, raw = server.post("/v1/attributions", {**slow, "prompt": "Question: Who is Calheim?\nAnswer:"})
        assert status == 503 and headers["retry-after"] and json.loads(raw)["field"] == "queue"
        assert server.json("GET", f"/v1/jobs/{running['id']}")[1]["state"] == "running"
        server.kill()
    finally:
        server.stop()
    for name in ("jobs.sqlite", "cache.sqlite"):
        with sqlite3.connect(run_dir / "serve" / name) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _digest(run_dir) == before  # the model, store and results are as they were
    again = Server(config, tmp_path / "server2.log").start()
    try:
        assert again.json("GET", "/healthz")[1]["jobs_failed_at_start"] == 2
        # serve.auth: false opens every route, /metrics and /v1 alike (no token exists here)
        assert again.get("/metrics")[0] == 200 and again.get("/v1/methods")[0] == 200
        for job_id in (running["id"], queued["id"]):
            status, job = again.json("GET", f"/v1/jobs/{job_id}")
            assert status == 200 and job["state"] == "failed" and "server stopped" in job["error"], job
            status, body = again.json("GET", f"/v1/attributions/{job_id}")
            assert status == 410 and body["job"]["state"] == "failed"
        job, raw = again.attribute({"prompt": "Question: Who is Daldor?\nAnswer:", "methods": ["bm25"], "k": 2})
        assert json.loads(raw)["rankings"]["bm25"]
        assert _digest(run_dir) == before
    finally:
        again.stop()
