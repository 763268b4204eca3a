"""Which routes need a token (`serve.auth` on, `serve.metrics_public` off, the default): every
/v1 route and /metrics do; /healthz (liveness probes), the page's assets, and the API schema
do not. The other modes (metrics_public, auth off) are checked on their own servers in
test_serve_reload.py and test_serve_restart.py."""

from __future__ import annotations

import json

import pytest

OPEN = ["/healthz", "/", "/app.js", "/app.css", "/openapi.json", "/docs"]
GUARDED = [("GET", "/metrics"), ("GET", "/v1/methods"), ("GET", "/v1/rows/anything"), ("GET", "/v1/jobs/" + "0" * 32),
           ("GET", "/v1/jobs/" + "0" * 32 + "/events"), ("GET", "/v1/attributions/" + "0" * 32),
           ("DELETE", "/v1/jobs/" + "0" * 32), ("POST", "/v1/jobs/" + "0" * 32 + "/cancel"),
           ("POST", "/v1/attributions")]


@pytest.mark.parametrize("path", OPEN)
def test_open_routes_answer_without_a_token(live_server, path):
    assert live_server.get(path, token=None)[0] == 200


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_guarded_routes_need_a_token(live_server, method, path):
    body = {"prompt": "Question: Who is Daldor?\nAnswer:", "methods": ["bm25"]} if method == "POST" else None
    status, headers, raw = live_server.request(method, path, body, token=None)
    assert status == 401 and json.loads(raw)["field"] == "authorization", (path, raw)
    assert headers.get("www-authenticate") == "Bearer"
    assert live_server.request(method, path, body)[0] != 401  # with the token: past the guard


def test_metrics_with_a_token_is_prometheus_text(live_server):
    status, headers, raw = live_server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "datablame_queue_length" in raw.decode()
    health = live_server.json("GET", "/healthz", token=None)[1]
    assert health["auth"] is True and health["metrics_public"] is False
