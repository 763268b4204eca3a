"""The retrieval cascade over HTTP on a live `datablame serve`: a request asks for it (the run's
config has it off), the server runs it through the same api as `datablame attribute`
(`attribute_with_cascade`), and the answer carries its stage table; a candidate's score is
the exhaustive score of that row; the answer is cached byte for byte (no timing in it)."""

from __future__ import annotations

import json

import pytest

CASCADE = {"embedding_k": 30, "bm25_k": 20}


@pytest.fixture(scope="module")
def query(serve_run):
    from datablame import api

    _, queries, truth = api.load_corpus(api.load_config(serve_run))
    return queries[0], truth[queries[0].query_id]


def test_cascade_request_returns_the_stage_table(live_server, query):
    q, planted = query
    body = {"prompt": q.prompt, "completion": q.completion, "methods": ["grad_cosine", "fused"], "k": 5,
            "cascade": CASCADE}
    job, raw = live_server.attribute(body)
    answer = json.loads(raw)
    table = answer["retrieval"]
    stages = [(s["stage"], s["candidates_in"], s["candidates_out"]) for s in table["stages"]]
    assert stages == [("embedding", 55, 30), ("bm25", 30, 20), ("rerank", 20, 5)], stages
    # the feature store is attached: each stage's recall of the exhaustive gradient-cosine top 5
    assert all(s["recall"] is not None and 0 <= s["recall"] <= 1 for s in table["stages"])
    assert table["stages"][-1]["recall"] <= table["stages"][0]["recall"]  # narrowing never gains recall
    assert table["config"]["bm25_k"] == 20 and table["final_k"] == 5
    grad = answer["rankings"]["grad_cosine"]
    assert [r["row_id"] for r in grad] == table["row_ids"]  # grad_cosine ranks the re-rank's rows
    assert set(answer["rankings"]) == {"grad_cosine", "fused"}
    assert not any("seconds" in s for s in table["stages"])  # timing is the job's, not the answer's
    assert job["cached"] is False and job["timing"]["cascade_s"] > 0

    # a candidate's score is that row's exhaustive score (the cascade narrows, never rescales)
    _, full_raw = live_server.attribute({**body, "methods": ["grad_cosine"], "k": 55, "cascade": False})
    full = {r["row_id"]: r["score"] for r in json.loads(full_raw)["rankings"]["grad_cosine"]}
    assert json.loads(full_raw)["retrieval"] is None
    for r in grad:
        assert r["score"] == pytest.approx(full[r["row_id"]], rel=1e-4, abs=1e-6), r["row_id"]

    # cached byte for byte, and a forced recomputation gives the same bytes
    again_job, again = live_server.attribute(body)
    assert again_job["cached"] is True and again == raw
    fresh_job, fresh = live_server.attribute({**body, "cache": False})
    assert fresh_job["cached"] is False and fresh == raw


def test_cascade_with_a_filter_starts_with_the_metadata_stage(live_server, query):
    q, _ = query
    body = {"prompt": q.prompt, "completion": q.completion, "methods": ["grad_cosine"], "k": 3,
            "filter": "kind == 'background'", "cascade": True}
    _, raw = live_server.attribute(body)
    answer = json.loads(raw)
    stages = answer["retrieval"]["stages"]
    assert stages[0]["stage"] == "filter" and stages[0]["candidates_out"] < 55
    assert [s["stage"] for s in stages] == ["filter", "embedding", "bm25", "rerank"]
    rows = answer["rankings"]["grad_cosine"]
    assert len(rows) == 3 and all(r["metadata"]["kind"] == "background" for r in rows)


@pytest.mark.parametrize(("body", "field"), [
    ({"methods": ["grad_cosine", "bm25"], "cascade": True}, "methods"),
    ({"methods": ["grad_cosine"], "k": 10, "cascade": {"bm25_k": 5}}, "cascade.bm25_k"),
    ({"methods": ["grad_cosine"], "cascade": {"bm25": 5}}, "cascade.bm25"),
    ({"methods": ["grad_cosine"], "cascade": "yes"}, "cascade"),
])
def test_a_cascade_it_cannot_run_is_422_naming_the_field(live_server, body, field):
    status, answer = live_server.json("POST", "/v1/attributions", {"prompt": "Question: Who is Daldor?\nAnswer:", **body})
    assert status == 422 and answer["field"] == field, answer
    assert field in answer["error"]
