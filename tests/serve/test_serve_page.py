"""The web page of `datablame serve` in headless Chromium: load it, enter the token and a
planted query, submit, wait for the ranked rows, check the top row and the highlighting, open
the HTML report, and save a screenshot to benchmarks/results/serve_page.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "serve_page.png"


def test_page_submits_a_query_and_shows_the_ranked_rows(live_server, serve_run):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it as root)")
    from datablame import api

    _, queries, truth = api.load_corpus(api.load_config(serve_run))
    q = queries[0]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live_server.url + "/")  # the page itself is open; its /v1 calls need the token
            page.wait_for_selector("#status.error")
            assert "authorization" in page.inner_text("#status")
            page.fill("#token", live_server.token)
            page.reload()  # the token is kept in localStorage: the methods load with it
            page.wait_for_selector("#methods input[value='bm25']")
            assert page.is_checked("#methods input[value='grad_cosine']")
            page.fill("#prompt", q.prompt)
            page.fill("#completion", q.completion)
            page.fill("#k", "5")
            page.click("#submit")
            page.wait_for_selector("body[data-state='done']", timeout=120_000)
            rows = page.locator("#rows tbody tr")
            assert rows.count() >= 5
            # the first rows are each method's #1; bm25's is a planted row of this query
            firsts = [rows.nth(i).get_attribute("data-row-id") for i in range(2)]
            assert set(firsts) & set(truth[q.query_id]), (firsts, truth[q.query_id])
            assert "1 ·" in " ".join(rows.first.locator("td.num").all_inner_texts())
            assert sorted(page.locator("#rows thead th").all_inner_texts()[2:]) == ["bm25 (rank · score)",
                                                                                  "grad_cosine (rank · score)"]
            marks = rows.first.locator("mark").all_inner_texts()
            assert marks and all(m.lower() in (q.prompt + q.completion).lower() for m in marks)
            # the HTML report opens in a new tab, fetched with the token (the link alone would be 401)
            with page.expect_popup() as opened:
                page.click("#report")
            report = opened.value
            report.wait_for_selector("h1")
            assert report.inner_text("h1") == "datablame attribution report" and q.prompt.split()[1] in report.content()
            report.close()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
