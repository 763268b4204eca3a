"""`datablame serve` over HTTP on a live uvicorn process: the answer, the cache, jobs, rows,
methods, SSE, metrics and the OpenAPI schema."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml


@pytest.fixture(scope="module")
def planted(serve_run):
    from datablame import api

    _, queries, truth = api.load_corpus(api.load_config(serve_run))
    return queries, truth


def test_health_methods_and_schema(live_server):
    status, health = live_server.json("GET", "/healthz", token=None)
    assert status == 200 and health["status"] == "ok" and health["rows"] == 55
    assert health["store"] is True and health["auth"] is True and health["cache"] == "sqlite"
    status, methods = live_server.json("GET", "/v1/methods")
    names = {m["name"] for m in methods["methods"]}
    assert {"grad_cosine", "bm25", "ekfac"} <= names and methods["default"] == ["grad_cosine", "bm25"]
    status, schema = live_server.json("GET", "/openapi.json", token=None)
    assert status == 200
    for path in ("/v1/attributions", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/attributions/{job_id}",
                 "/v1/rows/{row_id}", "/v1/methods", "/healthz", "/metrics", "/v1/reports/{report_id}"):
        assert path in schema["paths"], path
    body = schema["paths"]["/v1/attributions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"prompt", "completion", "methods", "k", "filter", "cascade"} <= set(body["properties"])
    assert "$ref" not in json.dumps(body)  # nested models inlined: every reference resolves in the document
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate({"prompt": "x", "cascade": {"bm25_k": 30}}, body)  # what a generated client would send
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"prompt": "x", "cascade": {"bm25": 30}}, body)
    for path in ("/v1/jobs/{job_id}/cancel",):
        assert "post" in schema["paths"][path]
    assert "delete" in schema["paths"]["/v1/jobs/{job_id}"]


def test_planted_query_ranks_its_planted_rows_first(live_server, planted):
    queries, truth = planted
    q = queries[0]
    job, raw = live_server.attribute({"prompt": q.prompt, "completion": q.completion, "k": 5})
    answer = json.loads(raw)
    assert answer["query"] == {"prompt": q.prompt, "completion": q.completion, "generated": False}
    assert answer["methods"] == ["grad_cosine", "bm25"] and set(answer["rankings"]) == {"grad_cosine", "bm25"}
    for rows in answer["rankings"].values():
        assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
        assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:], strict=False))
        assert all(r["prompt"] and "metadata" in r for r in rows)
    top = answer["rankings"]["bm25"][0]
    assert top["row_id"] in truth[q.query_id], (top, truth[q.query_id])
    # side by side: every ranked row once, with each method's rank and score
    side = {r["row_id"]: r for r in answer["rows"]}
    for m, rows in answer["rankings"].items():
        for r in rows:
            assert side[r["row_id"]]["ranks"][m] == r["rank"] and side[r["row_id"]]["scores"][m] == r["score"]
    # the row endpoint gives the same text and metadata
    status, row = live_server.json("GET", f"/v1/rows/{top['row_id']}")
    assert status == 200 and row["prompt"] == top["prompt"] and row["metadata"] == top["metadata"]


def test_cached_answer_is_byte_identical_to_a_fresh_one(live_server, planted):
    queries, _ = planted
    body = {"prompt": queries[1].prompt, "completion": queries[1].completion, "k": 4, "methods": ["grad_cosine"]}
    first_job, first = live_server.attribute(body)
    assert first_job["cached"] is False
    again_job, again = live_server.attribute(body)
    assert again_job["cached"] is True and again == first
    fresh_job, fresh = live_server.attribute({**body, "cache": False})
    assert fresh_job["cached"] is False and fresh == first  # recomputed: the same bytes
    status, headers, _ = live_server.get(f"/v1/attributions/{again_job['id']}")
    assert headers["x-datablame-cache"] == "hit"
    # another k is another answer, not a hit
    other_job, other = live_server.attribute({**body, "k": 3})
    assert other_job["cached"] is False and len(json.loads(other)["rankings"]["grad_cosine"]) == 3
    status, _, metrics = live_server.get("/metrics")  # a token: /metrics is not public here
    text = metrics.decode()
    hits = next(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith('datablame_cache_lookups_total{result="hit"}'))
    assert hits >= 1
    assert 'datablame_request_seconds_bucket{route="/v1/attributions",le="+Inf"}' in text
    assert "datablame_queue_length 0" in text


def test_generated_completion_filter_and_events(live_server):
    body = {"prompt": "Question: What is the main export of Daldor?\nAnswer:", "k": 50,
            "filter": "kind == 'background'", "methods": ["bm25"], "wait": False}
    status, job = live_server.json("POST", "/v1/attributions", body)
    assert status in (200, 202)
    req = urllib.request.Request(f"{live_server.url}/v1/jobs/{job['id']}/events",
                                 headers={"Authorization": f"Bearer {live_server.token}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.read().decode().splitlines() if line.startswith("event: ")]
    assert events[-1] == "event: done"
    _, raw = live_server.get(f"/v1/attributions/{job['id']}")[1:]
    answer = json.loads(raw)
    assert answer["query"]["generated"] is True and isinstance(answer["query"]["completion"], str)
    rows = answer["rankings"]["bm25"]
    assert rows and all(r["metadata"]["kind"] == "background" for r in rows)
    run = yaml.safe_load(live_server.config.read_text())
    assert len(rows) <= run["serve"].get("max_k", 100)


def test_unknown_ids_are_404_naming_the_field(live_server):
    for path, field in (("/v1/jobs/" + "0" * 32, "job_id"), ("/v1/attributions/nope", "job_id"),
                        ("/v1/rows/no-such-row", "row_id")):
        status, body = live_server.json("GET", path)
        assert status == 404 and body["field"] == field, (path, body)
