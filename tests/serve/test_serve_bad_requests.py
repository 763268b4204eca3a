"""Bad requests to a live `datablame serve` get 4xx naming the field, and the server keeps
serving; tokens are kept hashed; the rate limiter refuses past its budget."""

from __future__ import annotations

import json

import pytest

GOOD = {"prompt": "Question: What is the main export of Daldor?\nAnswer:", "completion": " salt.", "k": 2,
        "methods": ["bm25"]}


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "body"),
    (b"[1, 2]", 422, "body"),
    ({**GOOD, "methods": ["no_such_method"]}, 422, "methods"),
    ({**GOOD, "k": 10**9}, 422, "k"),
    ({**GOOD, "k": 0}, 422, "k"),
    ({**GOOD, "prompt": ""}, 422, "prompt"),
    ({**GOOD, "methods": ["../../etc/passwd"]}, 422, "methods"),
    ({**GOOD, "config": "/etc/passwd"}, 422, "config"),
    ({**GOOD, "filter": "__import__('os').system('true')"}, 422, "filter"),
    ({**GOOD, "filter": "no_such_column == 1"}, 422, "filter"),
])
def test_bad_request_is_4xx_naming_the_field_and_the_server_keeps_serving(live_server, body, status, field):
    got, _, raw = live_server.post("/v1/attributions", body)
    answer = json.loads(raw)
    assert got == status and answer["field"] == field, answer
    assert field.split(".")[0] in answer["error"]
    assert live_server.get("/healthz", token=None)[0] == 200
    # and a good request still works after it
    job, answer_raw = live_server.attribute(GOOD)
    assert json.loads(answer_raw)["rankings"]["bm25"]


def test_a_10_mb_prompt_is_413_before_it_is_read(live_server):
    """The body's declared size is refused before the body is read (the client may still be sending)."""
    import http.client

    body = json.dumps({**GOOD, "prompt": "x" * 10_000_000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", live_server.port, timeout=60)
    conn.putrequest("POST", "/v1/attributions")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Authorization", f"Bearer {live_server.token}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    try:
        conn.send(body[:65536])  # the first part only: the answer comes before the rest is read
    except OSError:
        pass
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 413 and answer["field"] == "body" and "max_body_bytes" in answer["error"]
    assert live_server.attribute(GOOD)[0]["state"] == "done"


def test_a_long_prompt_within_the_body_limit_is_413_naming_prompt(live_server):
    status, _, raw = live_server.post("/v1/attributions", {**GOOD, "prompt": "x" * 20_000})
    assert status == 413 and json.loads(raw)["field"] == "prompt"


@pytest.mark.parametrize("token", [None, "dbt_deadbeef_wrong", "not-a-token"])
def test_missing_or_wrong_token_is_401(live_server, token):
    status, headers, raw = live_server.get("/v1/methods", token=token)
    assert status == 401 and json.loads(raw)["field"] == "authorization"
    assert headers.get("www-authenticate") == "Bearer"
    assert live_server.get("/v1/methods")[0] == 200


def test_tokens_are_hashed_at_rest(live_server):
    from datablame.serve.tokens import tokens_file

    run_dir = live_server.config.parent / "run"
    text = tokens_file(run_dir).read_text()
    secret = live_server.token.split("_", 2)[2]
    assert secret not in text and live_server.token not in text
    assert json.loads(text)[0]["sha256"]


def test_rate_limiter_refuses_past_the_budget():
    from datablame.serve.tokens import RateLimiter

    limiter = RateLimiter(per_minute=3)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert 0 < wait <= 20  # one request refills in 20 s
    assert limiter.take("b") == 0.0  # per caller
