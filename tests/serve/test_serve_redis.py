"""The answer cache in a real redis-server (started here on a unix socket): put/get, the
identity prefix that drops another model's answers, and a live server using it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from serve_helpers import Server, copy_run


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it as root)")
    pytest.importorskip("redis", reason="the redis client (serve extra) is not installed")
    import redis

    d = tmp_path_factory.mktemp("redis")
    sock = d / "redis.sock"
    proc = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                             "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"unix://{sock}"
    for _ in range(100):
        try:
            if redis.Redis.from_url(url).ping():
                break
        except (redis.RedisError, OSError):
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


def test_redis_cache_roundtrip_and_identity_invalidation(redis_url):
    from datablame.serve.cache import RedisCache, cache_key

    cache = RedisCache(redis_url)
    old, new = cache_key("run-old", {"q": 1}), cache_key("run-new", {"q": 1})
    cache.put(old, b"\x00old answer")
    cache.put(new, b"new answer")
    assert cache.get(old) == b"\x00old answer" and cache.get(cache_key("run-new", {"q": 2})) is None
    assert cache.drop_other_runs("run-new") == 1
    assert cache.get(old) is None and cache.get(new) == b"new answer"


def test_unreachable_redis_is_a_clear_error(tmp_path):
    from datablame.errors import DatablameError
    from datablame.serve.cache import RedisCache

    with pytest.raises(DatablameError, match="cannot reach Redis"):
        RedisCache(f"unix://{tmp_path}/nothing.sock")


def test_live_server_with_redis_cache(serve_run, redis_url, tmp_path):
    import redis

    server = Server(copy_run(serve_run, tmp_path, cache=redis_url, auth=False), tmp_path / "server.log").start()
    try:
        assert server.json("GET", "/healthz")[1]["cache"] == "redis"
        body = {"prompt": "Question: What is the main export of Daldor?\nAnswer:", "completion": " salt.", "k": 3}
        first_job, first = server.attribute(body)
        second_job, second = server.attribute(body)
        assert (first_job["cached"], second_job["cached"]) == (False, True) and first == second
        keys = list(redis.Redis.from_url(redis_url).scan_iter(match="datablame:answer:*"))
        assert len(keys) == 1 and redis.Redis.from_url(redis_url).get(keys[0]) == first
        assert json.loads(first)["rankings"]
    finally:
        server.stop()


def test_redis_cache_cap_and_ttl(redis_url):
    import redis

    from datablame.serve.cache import RedisCache, cache_key

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        cache = RedisCache(redis_url, max_entries=3)
        keys = [cache_key("c" * 24, {"q": i}) for i in range(4)]
        for i, key in enumerate(keys):
            cache.put(key, f"answer {i}".encode())
        assert cache.get(keys[0]) is None  # the oldest went past the cap
        assert [cache.get(k) for k in keys[1:]] == [b"answer 1", b"answer 2", b"answer 3"]
        assert client.zcard(RedisCache.INDEX) == 3
        short = RedisCache(redis_url, ttl_s=0.05)
        short.put(keys[0], b"answer 0")
        assert client.pttl(RedisCache.PREFIX + keys[0]) != -1  # stored with an expiry (-2: already gone)
        time.sleep(0.1)
        assert short.get(keys[0]) is None  # expired: a miss
    finally:
        client.flushdb()
