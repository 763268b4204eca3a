"""Jobs and limits over HTTP on a live `datablame serve`: a per-token rate limit answers 429
with Retry-After and serves again after it; cancelling a queued and a running job leaves them
`cancelled` without a result, and the worker goes on with the next job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

SLOW = ["tracin", "ekfac", "trak", "grad_cosine"]  # several methods: a running job stops between them


def test_a_token_past_its_rate_limit_gets_429_then_is_served_after_the_wait(live_server):
    from typer.testing import CliRunner

    from datablame.cli import app

    # `datablame serve token create --rate-limit` (in-process: a subprocess would import torch again)
    made = CliRunner().invoke(app, ["serve", "token", "create", "--config", str(live_server.config), "--name", "burst",
                                    "--rate-limit", "30"])
    assert made.exit_code == 0, made.output
    burst = made.stdout.strip().splitlines()[-1]  # its own limit and bucket
    tokens = json.loads((Path(yaml.safe_load(live_server.config.read_text())["output"]["dir"])
                         / "serve" / "tokens.json").read_text())
    assert [t["rate_limit_per_minute"] for t in tokens if t["name"] == "burst"] == [30]
    statuses, headers, body = [], {}, b""
    for _ in range(200):  # 30 a minute refill one every 2 s: a quick burst runs out
        status, headers, body = live_server.get("/v1/methods", token=burst)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200} and len(statuses) >= 30, statuses[-5:]
    answer = json.loads(body)
    assert answer["field"] == "authorization" and "rate limit" in answer["error"]
    wait = int(headers["retry-after"])
    assert 1 <= wait <= 3
    assert live_server.get("/v1/methods")[0] == 200  # another token is not limited by this one
    assert live_server.get("/healthz", token=None)[0] == 200
    time.sleep(wait)
    assert live_server.get("/v1/methods", token=burst)[0] == 200  # the window passed: served again


def _wait_state(server, job_id: str, states: set[str], timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = server.json("GET", f"/v1/jobs/{job_id}")[1]
        if job["state"] in states:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"{job_id} never reached {states}")


def test_cancel_a_queued_and_a_running_job_then_the_worker_goes_on(live_server):
    status, running = live_server.json("POST", "/v1/attributions", {
        "prompt": "Question: Who trades with Quenmar (cancel test)?\nAnswer:", "methods": SLOW, "k": 3, "wait": False})
    assert status in (200, 202)
    _wait_state(live_server, running["id"], {"running"})
    status, queued = live_server.json("POST", "/v1/attributions", {
        "prompt": "Question: Who trades with Zorblax (cancel test)?\nAnswer:", "methods": SLOW, "k": 3, "wait": False})
    assert status == 202 and queued["state"] == "queued"

    status, job = live_server.json("POST", f"/v1/jobs/{queued['id']}/cancel")
    assert status == 200 and job["state"] == "cancelled" and job["result"] is None
    assert job["message"] == "cancelled while queued"
    status, job = live_server.json("DELETE", f"/v1/jobs/{running['id']}")
    assert status == 200 and (job["state"] == "cancelled" or job["cancel_requested"]), job
    job = live_server.wait_job(running["id"])
    assert job["state"] == "cancelled" and job["result"] is None and job["error"] is None
    assert job["message"] == "cancelled while running"  # stopped between its methods, answer discarded

    for job_id in (queued["id"], running["id"]):
        status, body = live_server.json("GET", f"/v1/attributions/{job_id}")
        assert status == 410 and body["job"]["state"] == "cancelled"  # no result, now or later
        assert live_server.json("DELETE", f"/v1/jobs/{job_id}")[1]["state"] == "cancelled"  # idempotent
    assert live_server.json("DELETE", "/v1/jobs/" + "f" * 32)[0] == 404

    # the worker goes on: the next job runs and answers
    job, raw = live_server.attribute({"prompt": "Question: Who is Daldor?\nAnswer:", "methods": ["bm25"], "k": 2})
    assert job["state"] == "done" and json.loads(raw)["rankings"]["bm25"]
    metrics = live_server.get("/metrics")[2].decode()
    cancelled = next(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith('datablame_jobs_total{state="cancelled"}'))
    assert cancelled >= 2
