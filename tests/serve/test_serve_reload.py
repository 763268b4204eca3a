"""The run's model or feature store changes on disk while `datablame serve` runs: no cached
answer of the old model is served. The model's weights change (the store no longer matches):
the reload fails, queries get 503 naming the fix (`datablame index`, or restart), /healthz
says why. The store is rebuilt: the next query reloads, answers afresh under the new identity,
the old identity's cached answers are gone, and the new answer is cached. Also: with
`serve.metrics_public: true`, /metrics is open while /v1 still needs the token."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from serve_helpers import Server, copy_run


@pytest.fixture(scope="module")
def server(serve_run, tmp_path_factory):
    from datablame.serve.tokens import create_token

    tmp = tmp_path_factory.mktemp("reload")
    config = copy_run(serve_run, tmp, metrics_public=True)
    server = Server(config, tmp / "server.log")
    server.token = create_token(tmp / "run", "tests")
    server.start()
    yield server
    server.stop()


def test_metrics_public_opens_metrics_and_nothing_else(server):
    status, _, raw = server.get("/metrics", token=None)
    assert status == 200 and "datablame_requests_total" in raw.decode()
    assert server.get("/v1/methods", token=None)[0] == 401
    assert server.json("GET", "/healthz", token=None)[1]["metrics_public"] is True


def _perturb_weights(model_dir: Path) -> None:
    """New weights in place (write temp + rename), as a retrained model would land."""
    import torch
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    weights = load_file(path)
    name = sorted(k for k in weights if k.endswith("weight") and weights[k].ndim == 2)[0]
    weights[name] = weights[name] + 0.05 * torch.randn_like(weights[name])
    tmp = path.with_name(".model.safetensors.tmp")
    save_file(weights, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)


def test_model_then_store_change_on_disk_never_serves_a_stale_answer(server):
    from datablame import api
    from datablame.layout import RunLayout

    run_dir = Path(yaml.safe_load(server.config.read_text())["output"]["dir"])
    body = {"prompt": "Question: What is the main export of Daldor?\nAnswer:", "completion": " salt.",
            "methods": ["grad_cosine"], "k": 5}
    first_job, first = server.attribute(body)
    again_job, again = server.attribute(body)
    assert again_job["cached"] is True and again == first
    old = json.loads(first)["run"]

    # 1. the model changes (retrained in place), the store still describes the old one
    _perturb_weights(RunLayout(run_dir).final_model)
    status, reply = server.json("POST", "/v1/attributions", body)
    if status == 202:  # the worker is reloading: the job fails with the reason
        job = server.wait_job(reply["id"])
        assert job["state"] == "failed" and "changed on disk" in job["error"], job
        status, reply = server.json("POST", "/v1/attributions", body)
    assert status == 503 and reply["field"] == "run", reply  # not the cached answer of the old model
    for needed in ("changed on disk", "datablame index", "restart `datablame serve`"):
        assert needed in reply["error"], (needed, reply["error"])
    status, headers, _ = server.post("/v1/attributions", body)
    assert status == 503 and int(headers["retry-after"]) > 0
    health = server.json("GET", "/healthz", token=None)[1]
    assert health["status"] == "ok" and "datablame index" in health["reload_error"]  # alive, and says why
    assert health["reload_pending"] is True

    # 2. the store is rebuilt for the new model: the next query reloads and answers afresh
    cfg = api.load_config(server.config)
    api.index(cfg, overwrite=True, progress=False, text_indices=False, faiss="none")
    fresh_job, fresh = server.attribute(body)
    new = json.loads(fresh)["run"]
    assert fresh_job["cached"] is False
    assert new["identity"] != old["identity"] and new["model"] != old["model"]
    cached_job, cached = server.attribute(body)
    assert cached_job["cached"] is True and cached == fresh  # cached again, under the new identity
    health = server.json("GET", "/healthz", token=None)[1]
    assert health["reloads"] == 1 and health["reload_error"] is None and health["run"] == new["identity"]
    assert health["reload_pending"] is False
    with sqlite3.connect(run_dir / "serve" / "cache.sqlite") as conn:  # the old model's answers are gone
        assert {r[0] for r in conn.execute("SELECT DISTINCT run FROM answers")} == {new["identity"]}
