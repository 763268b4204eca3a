"""Start `datablame serve`: load the run once, open the cache and the job table, and run
uvicorn on `serve.host:serve.port` (127.0.0.1 by default)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.serve.cache import AnswerCache, open_cache
from datablame.serve.engine import Engine
from datablame.serve.jobs import JobRunner, JobTable
from datablame.serve.metrics import Metrics
from datablame.serve.tokens import TokenBook, create_token

log = logging.getLogger("datablame")


@dataclass
class Served:
    app: object
    engine: Engine
    runner: JobRunner
    cache: AnswerCache


def build(cfg: RunConfig) -> Served:
    """The app and what it owns; the model is loaded here, before any port is bound."""
    try:
        from datablame.serve.app import create_app
    except ImportError as err:
        raise DatablameError(f"`datablame serve` needs fastapi and uvicorn ({err})",
                             "pip install 'datablame[serve]' (scripts/setup.sh installs it)") from None
    engine = Engine(cfg)
    cache = open_cache(cfg.serve.cache, engine.run_dir, max_entries=cfg.serve.cache_max_entries,
                       ttl_s=cfg.serve.cache_ttl_s)
    dropped = cache.drop_other_runs(engine.identity_h)
    if dropped:
        log.info("dropped %d cached answers of another model or store", dropped)
    runner = JobRunner(engine, JobTable(engine.run_dir / "serve" / "jobs.sqlite"), cache,
                       queue_size=cfg.serve.queue_size, metrics=Metrics(), jobs_kept=cfg.serve.jobs_kept)
    return Served(create_app(cfg, engine, runner, cache), engine, runner, cache)


def run_server(cfg: RunConfig, *, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    if cfg.serve.auth and TokenBook(Path(cfg.output.dir)).count() == 0:
        log.warning("serve.auth is on and the run has no token yet: create one with "
                    "`datablame serve token create --config <run.yaml>`")
    served = build(cfg)
    if served.runner.failed_at_start:
        log.warning("%d job(s) of a previous server had not finished: marked failed", served.runner.failed_at_start)
    try:
        uvicorn.run(served.app, host=host, port=port, log_level="warning", access_log=False,
                    limit_concurrency=256, timeout_graceful_shutdown=5)
    finally:
        served.runner.stop()
        served.cache.close()


def new_token(cfg: RunConfig, name: str = "default", rate_limit_per_minute: int | None = None) -> str:
    return create_token(Path(cfg.output.dir), name, rate_limit_per_minute)
