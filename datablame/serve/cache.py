"""The answer cache of `datablame serve`: content-addressed, SQLite in the run or Redis.

The key is the sha256 of the run identity (model weights, data, feature store, attribution
settings, datablame version) and the request (prompt, completion, methods, filter, k), so an
answer is never served for another model or store: when either changes, the key changes. The
value is the answer's exact bytes, so a cached answer is byte-identical to the fresh one.
`drop_other_runs` removes entries of other identities (SQLite: at start; Redis: keys carry
the identity's hash as a prefix).
"""

from __future__ import annotations

import hashlib
import json
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


class SqliteCache(ThreadLocalSQLite):
    """One table (key, value) in `<run>/serve/cache.sqlite`, WAL mode, one connection per thread."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, run TEXT NOT NULL, value BLOB NOT NULL)")

    def get(self, key: str) -> bytes | None:
        row = self._conn().execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, key: str, value: bytes) -> None:
        self._conn().execute("INSERT OR REPLACE INTO answers (key, run, value) VALUES (?, ?, ?)",
                             (key, key.split(":", 1)[0], value))

    def drop_other_runs(self, identity_h: str) -> int:
        return self._conn().execute("DELETE FROM answers WHERE run != ?", (identity_h,)).rowcount



class RedisCache:
    """Keys `datablame:answer:<identity>:<request>` in the Redis at `url`; other identities'
    keys are removed at start (SCAN by prefix)."""

    kind = "redis"
    PREFIX = "datablame:answer:"

    def __init__(self, url: str, ttl_s: int | None = None) -> None:
        try:
            import redis
        except ImportError:
            raise DatablameError("serve.cache is a Redis URL but the redis client is not installed",
                                 "pip install 'datablame[serve]', or set serve.cache: sqlite") from None
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl_s = ttl_s
        try:
            self._client.ping()
        except redis.RedisError as err:
            raise DatablameError(f"serve.cache: cannot reach Redis at {_redacted(url)} ({err})",
                                 "start redis-server there, or set serve.cache: sqlite") from None

    def get(self, key: str) -> bytes | None:
        value = self._client.get(self.PREFIX + key)
        return bytes(value) if value is not None else None

    def put(self, key: str, value: bytes) -> None:
        self._client.set(self.PREFIX + key, value, ex=self.ttl_s)

    def drop_other_runs(self, identity_h: str) -> int:
        stale = [k for k in self._client.scan_iter(match=self.PREFIX + "*", count=500)
                 if not k.decode().startswith(self.PREFIX + identity_h + ":")]
        return int(self._client.delete(*stale)) if stale else 0

    def close(self) -> None:
        self._client.close()


def _redacted(url: str) -> str:
    """The URL without a password (redis://:secret@host -> redis://***@host)."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_cache(setting: str, run_dir: Path) -> AnswerCache:
    """`serve.cache`: "sqlite" (in the run directory), "none", or a Redis URL."""
    if setting == "none":
        return NoCache()
    if setting == "sqlite":
        return SqliteCache(run_dir / "serve" / "cache.sqlite")
    return RedisCache(setting)
