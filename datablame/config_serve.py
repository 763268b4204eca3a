"""The `serve:` section of the run config (`datablame serve`, see `datablame.serve`): where the
HTTP server binds, where answers are cached, how many jobs may wait, and the request limits.
Part of the config layer (imported by `datablame.config`).

    serve: {port: 8765, cache: redis://localhost:6379/0, queue_size: 16}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # loopback by default: binding elsewhere is a deliberate choice
    port: int = Field(8765, ge=0, le=65535)  # 0: any free port
    # "sqlite" (<run>/serve/cache.sqlite), "none", or a redis:// / rediss:// / unix:// URL
    cache: str = "sqlite"
    # the answer cache's bounds (SQLite and Redis): past the cap the oldest stored answers go first;
    # an answer older than the TTL is a miss and is recomputed (None: answers never expire)
    cache_max_entries: int = Field(100_000, ge=1, le=100_000_000)
    cache_ttl_s: float | None = Field(None, gt=0, le=10 * 365 * 86_400)
    queue_size: int = Field(16, ge=1, le=10_000)  # jobs waiting for the worker; more -> 503
    sync_wait_s: float = Field(2.0, ge=0, le=60)  # POST waits this long for a small job to answer inline
    auth: bool = True  # require a token from `datablame serve token create` (/v1 routes and /metrics)
    metrics_public: bool = False  # with auth on: /metrics open too (a scraper without a token); /healthz always is
    rate_limit_per_minute: int = Field(120, ge=1)  # per token (or per client address without auth)
    max_k: int = Field(100, ge=1, le=10_000)
    max_prompt_chars: int = Field(8_000, ge=1)  # prompt and completion, each
    max_body_bytes: int = Field(64_000, ge=256)
    max_methods: int = Field(8, ge=1)
    # finished jobs kept in <run>/serve/jobs.sqlite (each with its answer); older ones are pruned (404)
    jobs_kept: int = Field(10_000, ge=10)

    @field_validator("cache")
    @classmethod
    def _cache_kind(cls, v: str) -> str:
        if v in ("sqlite", "none") or v.startswith(("redis://", "rediss://", "unix://")):
            return v
        raise ValueError("serve.cache must be 'sqlite', 'none' or a redis:// (rediss://, unix://) URL")
