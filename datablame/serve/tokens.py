"""API tokens of `datablame serve`, hashed at rest, and the per-token rate limit.

`create_token` writes `<run>/serve/tokens.json` ({id, name, sha256, created} per token, and
`rate_limit_per_minute` when the token has its own limit instead of `serve.rate_limit_per_minute`;
the secret itself is printed once and never stored). A token reads `dbt_<id>_<secret>`; checking
one hashes the secret and compares in constant time. The file is re-read when it changes, so a
token created while the server runs works at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path

from datablame.errors import DatablameError
from datablame.utils.io import atomic_write_json

PREFIX = "dbt_"


def tokens_file(run_dir: Path) -> Path:
    return run_dir / "serve" / "tokens.json"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, list) and all({"id", "sha256"} <= set(t) for t in data)
    except (OSError, ValueError, AssertionError):
        raise DatablameError(f"{path} (the serve tokens) is unreadable or malformed",
                             f"delete {path} and create the tokens again: `datablame serve token create`") from None
    return data


def create_token(run_dir: Path, name: str = "default", rate_limit_per_minute: int | None = None) -> str:
    """A new token (returned once; only its hash is kept in `<run>/serve/tokens.json`);
    `rate_limit_per_minute`: this token's own limit (None: serve.rate_limit_per_minute)."""
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise DatablameError(f"--rate-limit is {rate_limit_per_minute}; it must be at least 1 request a minute",
                             "give a positive number, or leave it out for serve.rate_limit_per_minute")
    path = tokens_file(run_dir)
    tokens = _read(path)
    token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(24)
    entry = {"id": token_id, "name": name, "sha256": _digest(secret),
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if rate_limit_per_minute is not None:
        entry["rate_limit_per_minute"] = int(rate_limit_per_minute)
    tokens.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, tokens)
    os.chmod(path, 0o600)
    return f"{PREFIX}{token_id}_{secret}"


class TokenBook:
    """The hashed tokens of a run, reloaded when the file's stamp changes."""

    def __init__(self, run_dir: Path) -> None:
        self.path = tokens_file(run_dir)
        self._stamp: tuple | None = None
        self._by_id: dict[str, dict] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._by_id = {t["id"]: t for t in _read(self.path)} if stamp else {}
            self._stamp = stamp

    def check(self, token: str | None) -> str | None:
        """The token's id when it is valid, else None."""
        if not token or not token.startswith(PREFIX) or len(token) > 200:
            return None
        token_id, _, secret = token[len(PREFIX):].partition("_")
        with self._lock:
            self._refresh()
            known = self._by_id.get(token_id)
        if known is None or not secret:
            return None
        return token_id if hmac.compare_digest(known["sha256"], _digest(secret)) else None

    def rate_limit(self, token_id: str) -> int | None:
        """The token's own requests-a-minute limit (None: the server's)."""
        with self._lock:
            known = self._by_id.get(token_id) or {}
        value = known.get("rate_limit_per_minute")
        return int(value) if isinstance(value, int) and value >= 1 else None

    def count(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._by_id)


class RateLimiter:
    """A token bucket per caller: `per_minute` requests (or the caller's own limit), refilled
    continuously."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str, per_minute: int | None = None) -> float:
        """0 when allowed, else the seconds until the next request would be."""
        rate, capacity = (self.rate, self.capacity) if per_minute is None else (per_minute / 60.0, float(per_minute))
        now = time.monotonic()
        with self._lock:
            level, at = self._buckets.get(caller, (capacity, now))
            level = min(capacity, level + (now - at) * rate)
            if level >= 1:
                self._buckets[caller] = (level - 1, now)
                return 0.0
            self._buckets[caller] = (level, now)
            return (1 - level) / rate
