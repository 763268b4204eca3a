"""The answer cache of `datablame serve`: content-addressed, SQLite in the run or Redis.

The key is the sha256 of the run identity (model weights, data, feature store, attribution
settings, datablame version) and the request (prompt, completion, methods, filter, k), so an
answer is never served for another model or store: when either changes, the key changes. The
value is the answer's exact bytes, so a cached answer is byte-identical to the fresh one.
`drop_other_runs` removes entries of other identities (SQLite: at start; Redis: keys carry
the identity's hash as a prefix).

Size and age (`serve.cache_max_entries`, `serve.cache_ttl_s`): past the cap, the oldest stored
entries are evicted first; an entry older than the TTL is a miss (the query is recomputed and
stored again). Both caches apply them: SQLite with a `stored` time per entry, Redis with the
key's own expiry and a sorted index of the keys by time.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from datablame.errors import DatablameError
from datablame.serve.db import ThreadLocalSQLite


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cache_key(identity_h: str, request: dict[str, Any]) -> str:
    """`<identity hash>:<request hash>`; the request dict holds only what changes the answer."""
    body = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{identity_h}:{hashlib.sha256(body.encode()).hexdigest()}"


class AnswerCache(Protocol):
    kind: str

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def drop_other_runs(self, identity_h: str) -> int: ...
    def close(self) -> None: ...


class NoCache:
    kind = "none"

    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, value: bytes) -> None:
        return None

    def drop_other_runs(self, identity_h: str) -> int:
        return 0

    def close(self) -> None:
        return None


DEFAULT_MAX_ENTRIES = 100_000


class SqliteCache(ThreadLocalSQLite):
    """One table (key, run, value, stored) in `<run>/serve/cache.sqlite`, WAL mode, one
    connection per thread. `stored` is the wall-clock time of the put (`clock`, injectable for
    tests): an entry older than `ttl_s` is a miss and is deleted; past `max_entries` the oldest
    stored entries are deleted first. A cache file of an earlier version (no `stored` column)
    gains one, its entries counting as the oldest."""

    kind = "sqlite"

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(path)
        self.max_entries, self.ttl_s, self.clock = max_entries, ttl_s, clock
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, run TEXT NOT NULL, value BLOB NOT NULL, "
                      "stored REAL NOT NULL DEFAULT 0)")
            if "stored" not in {row[1] for row in c.execute("PRAGMA table_info(answers)")}:
                c.execute("ALTER TABLE answers ADD COLUMN stored REAL NOT NULL DEFAULT 0")
            c.execute("CREATE INDEX IF NOT EXISTS answers_stored ON answers (stored)")

    def _expired(self, stored: float) -> bool:
        return self.ttl_s is not None and self.clock() - stored >= self.ttl_s

    def get(self, key: str) -> bytes | None:
        row = self._conn().execute("SELECT value, stored FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if self._expired(row[1]):
            self._conn().execute("DELETE FROM answers WHERE key = ? AND stored = ?", (key, row[1]))
            return None
        return bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        c = self._conn()
        now = self.clock()
        c.execute("INSERT OR REPLACE INTO answers (key, run, value, stored) VALUES (?, ?, ?, ?)",
                  (key, key.split(":", 1)[0], value, now))
        if self.ttl_s is not None:
            c.execute("DELETE FROM answers WHERE stored <= ?", (now - self.ttl_s,))
        over = c.execute("SELECT COUNT(*) FROM answers").fetchone()[0] - self.max_entries
        if over > 0:  # oldest stored first; a replaced key was re-inserted, so rowid breaks ties by insertion
            c.execute("DELETE FROM answers WHERE rowid IN (SELECT rowid FROM answers ORDER BY stored, rowid LIMIT ?)",
                      (over,))

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def drop_other_runs(self, identity_h: str) -> int:
        return self._conn().execute("DELETE FROM answers WHERE run != ?", (identity_h,)).rowcount


class RedisCache:
    """Keys `datablame:answer:<identity>:<request>` in the Redis at `url`; other identities'
    keys are removed at start (SCAN by prefix). `ttl_s`: each key's expiry; `max_entries`: a
    sorted set (`datablame:answers-by-time`, score = time stored) finds the oldest keys to
    delete past the cap. Redis's own `maxmemory` policy still applies on top."""

    kind = "redis"
    PREFIX = "datablame:answer:"
    INDEX = "datablame:answers-by-time"  # not under PREFIX: a SCAN for answers never sees it

    def __init__(self, url: str, ttl_s: float | None = None, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.time) -> None:
        try:
            import redis
        except ImportError:
            raise DatablameError("serve.cache is a Redis URL but the redis client is not installed",
                                 "pip install 'datablame[serve]', or set serve.cache: sqlite") from None
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        try:
            self._client.ping()
        except redis.RedisError as err:
            raise DatablameError(f"serve.cache: cannot reach Redis at {_redacted(url)} ({err})",
                                 "start redis-server there, or set serve.cache: sqlite") from None

    def get(self, key: str) -> bytes | None:
        value = self._client.get(self.PREFIX + key)
        return bytes(value) if value is not None else None

    def put(self, key: str, value: bytes) -> None:
        now = self.clock()
        pipe = self._client.pipeline()
        pipe.set(self.PREFIX + key, value, px=None if self.ttl_s is None else max(1, int(self.ttl_s * 1000)))
        pipe.zadd(self.INDEX, {key: now})
        if self.ttl_s is not None:  # those keys have expired in Redis already
            pipe.zremrangebyscore(self.INDEX, "-inf", now - self.ttl_s)
        pipe.zcard(self.INDEX)
        over = int(pipe.execute()[-1]) - self.max_entries
        if over > 0:
            oldest = [k.decode() for k in self._client.zrange(self.INDEX, 0, over - 1)]
            pipe = self._client.pipeline()
            pipe.delete(*[self.PREFIX + k for k in oldest])
            pipe.zrem(self.INDEX, *oldest)
            pipe.execute()

    def drop_other_runs(self, identity_h: str) -> int:
        stale = [k for k in self._client.scan_iter(match=self.PREFIX + "*", count=500)
                 if not k.decode().startswith(self.PREFIX + identity_h + ":")]
        others = [k for k in self._client.zrange(self.INDEX, 0, -1) if not k.decode().startswith(identity_h + ":")]
        if others:
            self._client.zrem(self.INDEX, *others)
        return int(self._client.delete(*stale)) if stale else 0

    def close(self) -> None:
        self._client.close()


def _redacted(url: str) -> str:
    """The URL without a password (redis://:secret@host -> redis://***@host)."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_cache(setting: str, run_dir: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES,
               ttl_s: float | None = None) -> AnswerCache:
    """`serve.cache`: "sqlite" (in the run directory), "none", or a Redis URL; `max_entries`
    and `ttl_s` (`serve.cache_max_entries`, `serve.cache_ttl_s`) bound either."""
    if setting == "none":
        return NoCache()
    if setting == "sqlite":
        return SqliteCache(run_dir / "serve" / "cache.sqlite", max_entries=max_entries, ttl_s=ttl_s)
    return RedisCache(setting, ttl_s, max_entries=max_entries)


REPORTS = "/v1/reports/"


def report_path(key: str) -> str:
    """The HTML report's URL of the answer under `key`: content-addressed (the key, not the
    job), so a cached answer and a fresh one carry the same link and the same report."""
    return REPORTS + key.replace(":", "-", 1)


def key_of_report(report_id: str) -> str | None:
    """The cache key a report id names (None: not a report id; nothing else is accepted)."""
    identity_h, sep, request_h = report_id.partition("-")
    hexdigits = set("0123456789abcdef")
    if not sep or len(identity_h) != 24 or len(request_h) != 64 or not set(identity_h + request_h) <= hexdigits:
        return None
    return f"{identity_h}:{request_h}"
