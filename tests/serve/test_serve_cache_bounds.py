"""The answer cache's bounds (`serve.cache_max_entries`, `serve.cache_ttl_s`): past the cap the
oldest stored answer is evicted and recomputes as a miss, byte-identical; past the TTL a hit
becomes a miss (an injected clock, then a live server with a short TTL); the settings are
validated naming the field."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from pipeline_config import small_raw
from serve_helpers import Server, copy_run

from datablame.config import parse_config
from datablame.errors import DatablameError
from datablame.serve.cache import SqliteCache, cache_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_sqlite_cache_evicts_the_oldest_past_the_cap_and_expires_past_the_ttl(tmp_path):
    clock = Clock()
    cache = SqliteCache(tmp_path / "cache.sqlite", max_entries=3, ttl_s=60, clock=clock)
    keys = [cache_key("a" * 24, {"q": i}) for i in range(4)]
    for i, key in enumerate(keys[:3]):
        clock.now += 1
        cache.put(key, f"answer {i}".encode())
    assert [cache.get(k) for k in keys[:3]] == [b"answer 0", b"answer 1", b"answer 2"]  # hits, not reordered
    clock.now += 1
    cache.put(keys[3], b"answer 3")
    assert cache.get(keys[0]) is None and cache.count() == 3  # the oldest went
    assert [cache.get(k) for k in keys[1:]] == [b"answer 1", b"answer 2", b"answer 3"]
    clock.now += 1
    cache.put(keys[1], b"answer 1")  # stored again: now the newest
    clock.now += 1
    cache.put(keys[0], b"answer 0")
    assert cache.get(keys[2]) is None and cache.get(keys[1]) == b"answer 1"
    # past the TTL a hit is a miss; a fresh put is a hit again
    assert cache.get(keys[3]) == b"answer 3"
    clock.now += 60
    assert cache.get(keys[3]) is None
    cache.put(keys[3], b"answer 3")
    assert cache.get(keys[3]) == b"answer 3" and cache.count() == 1  # the expired ones were purged


def test_cache_file_of_an_earlier_version_gains_the_stored_column(tmp_path):
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, run TEXT NOT NULL, value BLOB NOT NULL)")
        conn.execute("INSERT INTO answers VALUES ('r:old', 'r', x'01')")
    cache = SqliteCache(path, max_entries=1)
    assert cache.get("r:old") == b"\x01"
    cache.put("r:new", b"\x02")
    assert cache.get("r:old") is None and cache.get("r:new") == b"\x02"  # the old entry counts as the oldest


@pytest.mark.parametrize(("serve", "field"), [({"cache_max_entries": 0}, "serve.cache_max_entries"),
                                               ({"cache_ttl_s": 0}, "serve.cache_ttl_s"),
                                               ({"cache_ttl_s": "soon"}, "serve.cache_ttl_s")])
def test_bad_cache_bounds_are_refused_naming_the_field(tmp_path, serve, field):
    with pytest.raises(DatablameError) as err:
        parse_config({**small_raw(tmp_path), "serve": serve})
    assert field in str(err.value.problem)


def test_defaults_cap_the_cache_and_never_expire(tmp_path):
    s = parse_config(small_raw(tmp_path)).serve
    assert (s.cache_max_entries, s.cache_ttl_s) == (100_000, None)


def test_live_server_evicts_past_the_cap_and_recomputes_byte_identical(serve_run, tmp_path):
    server = Server(copy_run(serve_run, tmp_path, auth=False, cache_max_entries=3), tmp_path / "server.log").start()
    prompt = "Question: What is the main export of Daldor?\nAnswer:"
    try:
        bodies = [{"prompt": prompt, "completion": " salt.", "methods": ["bm25"], "k": k} for k in (1, 2, 3, 4)]
        firsts = []
        for body in bodies:
            job, raw = server.attribute(body)
            assert job["cached"] is False
            firsts.append(raw)
        with sqlite3.connect(tmp_path / "run" / "serve" / "cache.sqlite") as conn:
            assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 3
        job, raw = server.attribute(bodies[1])
        assert job["cached"] is True and raw == firsts[1]  # still there
        job, raw = server.attribute(bodies[0])  # the oldest was evicted: a miss, the same bytes
        assert job["cached"] is False and raw == firsts[0]
        assert json.loads(raw)["rankings"]["bm25"]
    finally:
        server.stop()


def test_live_server_answer_past_its_ttl_is_recomputed(serve_run, tmp_path):
    ttl = 1.0
    server = Server(copy_run(serve_run, tmp_path, auth=False, cache_ttl_s=ttl), tmp_path / "server.log").start()
    try:
        body = {"prompt": "Question: What is the main export of Daldor?\nAnswer:", "completion": " salt.",
                "methods": ["bm25"], "k": 2}
        first_job, first = server.attribute(body)
        assert first_job["cached"] is False
        time.sleep(ttl + 0.2)  # the hit within the TTL is the injected-clock test's; here only its end
        again_job, again = server.attribute(body)
        assert again_job["cached"] is False and again == first
        with sqlite3.connect(tmp_path / "run" / "serve" / "cache.sqlite") as conn:
            assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 1  # stored again
    finally:
        server.stop()
