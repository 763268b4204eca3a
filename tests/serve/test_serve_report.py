"""The HTML report of a served answer over HTTP on a live `datablame serve`: the answer's
`report_url` works, renders the page of `datablame attribute` (query, ranked rows' text, no
external assets), is the same link and the same page for a cached and a fresh answer, carries
the cascade's stage table, and is guarded by the token like every /v1 route."""

from __future__ import annotations

import html
import json

import pytest


@pytest.fixture(scope="module")
def planted(serve_run):
    from datablame import api

    _, queries, _ = api.load_corpus(api.load_config(serve_run))
    return queries


def _report(server, url: str) -> str:
    status, headers, raw = server.get(url)
    assert status == 200, raw
    assert headers["content-type"].startswith("text/html")
    return raw.decode()


def test_answer_links_its_html_report(live_server, planted):
    q = planted[2]
    body = {"prompt": q.prompt, "completion": q.completion, "k": 3, "methods": ["bm25", "grad_cosine"]}
    job, raw = live_server.attribute(body)
    answer = json.loads(raw)
    url = answer["report_url"]
    assert url.startswith("/v1/reports/") and job["report_url"] == url
    assert live_server.json("GET", f"/v1/jobs/{job['id']}")[1]["report_url"] == url
    page = _report(live_server, url)
    assert "<h1>datablame attribution report</h1>" in page  # the renderer of `datablame attribute`'s report.html
    assert html.escape(q.prompt) in page and html.escape(q.completion) in page
    for rows in answer["rankings"].values():
        top = rows[0]
        assert html.escape(top["prompt"]) in page and top["row_id"] in page
    assert "<h3>bm25</h3>" in page and "<h3>grad_cosine</h3>" in page
    assert "<script" not in page and "<link" not in page and "src=" not in page  # self-contained: no CDN
    # a cached answer and a forced recomputation carry the same link, and the page is the same
    cached_job, cached = live_server.attribute(body)
    fresh_job, fresh = live_server.attribute({**body, "cache": False})
    assert cached_job["cached"] is True and fresh_job["cached"] is False
    assert json.loads(cached)["report_url"] == json.loads(fresh)["report_url"] == url
    assert _report(live_server, url) == page


def test_report_of_a_cascade_answer_has_the_stage_table(live_server, planted):
    q = planted[0]
    _, raw = live_server.attribute({"prompt": q.prompt, "completion": q.completion, "methods": ["grad_cosine"],
                                    "k": 4, "cascade": {"embedding_k": 30, "bm25_k": 20}})
    answer = json.loads(raw)
    page = _report(live_server, answer["report_url"])
    assert "<h2>Retrieval cascade</h2>" in page
    for stage in answer["retrieval"]["stages"]:
        assert (f"<td>{stage['stage']}</td><td class='num'>{stage['candidates_in']:.0f}</td>"
                f"<td class='num'>{stage['candidates_out']:.0f}</td>") in page


def test_unknown_report_is_404_and_no_token_is_401(live_server, planted):
    for report_id in ("0" * 24 + "-" + "0" * 64, "nope", "..-etc-passwd"):
        status, body = live_server.json("GET", f"/v1/reports/{report_id}")
        assert status == 404 and body["field"] == "report_id", (report_id, body)
        assert "no finished answer" in body["error"] and report_id in body["error"]
    status, _, raw = live_server.get("/v1/reports/..%2F..%2Fetc%2Fpasswd")  # no route reads a path
    assert status == 404 and b"root:" not in raw
    q = planted[2]
    _, raw = live_server.attribute({"prompt": q.prompt, "completion": q.completion, "k": 3, "methods": ["bm25"]})
    url = json.loads(raw)["report_url"]
    for token in (None, "dbt_nope_nope"):
        status, body = live_server.json("GET", url, token=token)
        assert status == 401 and body["field"] == "authorization", body
