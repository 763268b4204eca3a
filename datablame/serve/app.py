"""The HTTP API of `datablame serve` (FastAPI): attribution jobs, their progress (JSON and
server-sent events), answers, rows, methods, health, Prometheus metrics and the web page.

Nothing in a request is ever used as a path: rows are looked up by id in the loaded corpus,
jobs by id in the job table, reports by the answer's cache key (job table, then cache), and
the page's assets are read from the package at start.

Auth (`serve.auth`, on by default): every /v1 route needs `Authorization: Bearer <token>`
(`datablame serve token create`); so does /metrics unless `serve.metrics_public: true` (for a
Prometheus scraper without a token). Open: /healthz (liveness probes), the page and its assets
(the page asks for a token and sends it on every /v1 call), and the API's schema and docs
(/openapi.json, /docs: no data). With `serve.auth: false` everything is open, rate-limited per
client address.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)

from datablame import __version__, api
from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.serve.cache import AnswerCache, key_of_report
from datablame.serve.engine import Engine
from datablame.serve.jobs import TERMINAL, JobRunner, QueueFull
from datablame.serve.metrics import Metrics
from datablame.serve.report import render_answer_report
from datablame.serve.schemas import BadRequest, cache_request, parse_request, request_schema
from datablame.serve.tokens import RateLimiter, TokenBook

OPEN_PATHS = {"/", "/app.js", "/app.css", "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}


def _error(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _valid_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def create_app(cfg: RunConfig, engine: Engine, runner: JobRunner, cache: AnswerCache) -> FastAPI:
    s = cfg.serve
    metrics = runner.metrics or Metrics()
    runner.metrics = metrics
    tokens = TokenBook(engine.run_dir)
    limiter = RateLimiter(s.rate_limit_per_minute)
    methods_described = api.describe_methods()
    known = {d["name"] for d in methods_described}
    described_by_name = {d["name"]: d for d in methods_described}
    assets = {path: (resources.files("datablame.serve").joinpath("static", name).read_bytes(), mime)
              for path, (name, mime) in ASSETS.items()}
    app = FastAPI(title="datablame serve", version=__version__,
                  description="Training-data attribution for one trained run: which training rows made the "
                              "model say this? Authenticate with `Authorization: Bearer <token>` "
                              "(`datablame serve token create`).")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t = time.perf_counter()
        response = await _guarded(request, call_next)
        route = request.scope.get("route")
        metrics.request(request.method, getattr(route, "path", "unmatched"), response.status_code,
                        time.perf_counter() - t)
        return response

    async def _guarded(request: Request, call_next):
        path = request.url.path
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > s.max_body_bytes):
            return _error(413, "body", f"body: larger than serve.max_body_bytes ({s.max_body_bytes} bytes)")
        if path in OPEN_PATHS or request.method == "OPTIONS" or (path == "/metrics" and s.metrics_public):
            return await call_next(request)
        caller = request.client.host if request.client else "unknown"
        if s.auth:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            if not header:
                return _error(401, "authorization", "authorization: missing; send `Authorization: Bearer <token>` "
                              "(`datablame serve token create`)", {"WWW-Authenticate": "Bearer"})
            token_id = tokens.check(token.strip()) if scheme.lower() == "bearer" else None
            if token_id is None:
                return _error(401, "authorization", "authorization: unknown or malformed token",
                              {"WWW-Authenticate": "Bearer"})
            caller, per_minute = f"token:{token_id}", tokens.rate_limit(token_id)
        else:
            per_minute = None
        wait = limiter.take(caller, per_minute)
        if wait > 0:
            limit = per_minute or s.rate_limit_per_minute
            return _error(429, "authorization", f"rate limit: more than {limit} requests a minute for this "
                          f"{'token' if s.auth else 'client'}; retry after {max(1, math.ceil(wait))} s",
                          {"Retry-After": str(max(1, math.ceil(wait)))})
        return await call_next(request)

    for path, (body, mime) in assets.items():
        app.add_api_route(path, _asset(body, mime), methods=["GET"], include_in_schema=False)

    @app.get("/healthz", summary="liveness and what is loaded")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "run": engine.identity_h, "model": engine.served.identity["model"],
                "rows": len(engine.corpus), "store": engine.served.identity["store"] is not None,
                "cascade": engine.cascade, "cache": cache.kind, "queue": runner.queue_length(),
                "queue_capacity": s.queue_size, "auth": s.auth, "metrics_public": s.metrics_public or not s.auth,
                "jobs_failed_at_start": runner.failed_at_start, "reloads": engine.reloads,
                "reload_error": engine.unavailable(), "reload_pending": engine.stale()}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    def prom() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(runner.queue_length, s.queue_size),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/methods", summary="the attribution methods and the run's defaults")
    def methods() -> dict[str, Any]:
        return {"methods": methods_described, "default": cfg.attribution.method_names(), "top_k": cfg.attribution.top_k,
                "max_k": s.max_k, "cascade": engine.cascade}

    @app.post("/v1/attributions", summary="rank training rows for one query (a job; small ones answer inline)",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": request_schema()}}}},
              responses={200: {"description": "done within serve.sync_wait_s: the job with its answer"},
                         202: {"description": "queued: poll /v1/jobs/{id}"}, 503: {"description": "queue full"}})
    async def submit(request: Request) -> Response:
        raw = await _read_limited(request, s.max_body_bytes)
        try:
            req = parse_request(raw, s, known, cfg.attribution.method_names(), cfg.attribution.top_k, cfg)
            if req.filter is not None:
                await run_in_threadpool(_check_filter, engine, req.filter)
        except BadRequest as err:
            return _error(err.status, err.field, err.message)
        refused = await run_in_threadpool(engine.unavailable)
        if refused:
            return _error(503, "run", refused, {"Retry-After": "30"})
        plain = cache_request(req)
        # None: the model or store on disk is not the loaded one; never answer from the cache then
        key = await run_in_threadpool(engine.key_if_fresh, plain)
        job = runner.new_job(plain, key or engine.key(plain))
        if req.cache and key is not None:
            hit = await run_in_threadpool(cache.get, key)
            metrics.cache_lookup(hit is not None)
            if hit is not None:
                await run_in_threadpool(runner.finish_cached, job, hit)
                return _job_response(job, hit if req.wait else None)
        else:
            metrics.cache_lookup(False)
        try:
            runner.submit(job)
        except QueueFull:
            return _error(503, "queue", f"queue: {s.queue_size} jobs already waiting; retry later",
                          {"Retry-After": "5"})
        end = time.monotonic() + (s.sync_wait_s if req.wait else 0)
        while job.state not in TERMINAL and time.monotonic() < end:
            await asyncio.sleep(0.02)
        if job.state == "done":
            return _job_response(job, await run_in_threadpool(runner.table.answer, job.id))
        return _job_response(job, None)

    @app.get("/v1/jobs/{job_id}", summary="a job's state and progress")
    def job_state(job_id: str) -> Response:
        job = runner.get(job_id) if _valid_id(job_id) else None
        return JSONResponse(job.public()) if job else _error(404, "job_id", f"job_id: no job {job_id[:40]!r}")

    @app.delete("/v1/jobs/{job_id}", summary="cancel a job (queued: dropped; running: stops before its next method)",
                responses={200: {"description": "the job; state `cancelled`, or `running` with `cancel_requested` "
                                                "until it stops"}, 404: {"description": "no such job"}})
    def job_cancel(job_id: str) -> Response:
        job = runner.cancel(job_id) if _valid_id(job_id) else None
        return JSONResponse(job.public()) if job else _error(404, "job_id", f"job_id: no job {job_id[:40]!r}")

    @app.post("/v1/jobs/{job_id}/cancel", summary="cancel a job (the same as DELETE /v1/jobs/{id})")
    def job_cancel_post(job_id: str) -> Response:
        return job_cancel(job_id)

    @app.get("/v1/jobs/{job_id}/events", summary="a job's progress as server-sent events")
    async def job_events(job_id: str) -> Response:
        job = runner.get(job_id) if _valid_id(job_id) else None
        if job is None:
            return _error(404, "job_id", f"job_id: no job {job_id[:40]!r}")

        async def stream():
            last = None
            while True:
                now = runner.get(job_id).public()
                if now != last:
                    yield f"event: {now['state']}\ndata: {json.dumps(now)}\n\n"
                    last = now
                if now["state"] in TERMINAL:
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/attributions/{job_id}", summary="a finished job's answer (ranked rows, scores, row text, stages)")
    def answer(job_id: str) -> Response:
        job = runner.get(job_id) if _valid_id(job_id) else None
        if job is None:
            return _error(404, "job_id", f"job_id: no job {job_id[:40]!r}")
        if job.state != "done":
            return JSONResponse({"error": f"job_id: the job is {job.state}", "field": "job_id", "job": job.public()},
                                status_code=409 if job.state not in ("failed", "cancelled") else 410)
        body = runner.table.answer(job_id)
        if body is None:  # not expected: a job is shown done only once its answer is stored
            return _error(409, "job_id", "job_id: the answer is not stored yet; retry")
        return Response(body, media_type="application/json",
                        headers={"X-Datablame-Cache": "hit" if job.cached else "miss", "X-Datablame-Job": job.id})

    @app.get("/v1/reports/{report_id}", response_class=HTMLResponse,
             summary="a finished answer's HTML report (the answer's `report_url`; the page of `datablame attribute`)",
             responses={404: {"description": "no finished answer under this id"}})
    def report(report_id: str) -> Response:
        key = key_of_report(report_id)
        body = (runner.table.answer_for_key(key) or cache.get(key)) if key is not None else None
        if body is None:
            return _error(404, "report_id", f"report_id: no finished answer {report_id[:100]!r} in this run (take "
                          "`report_url` from a finished answer; answers of older jobs are pruned)")
        identity = json.loads(body)["run"]["identity"]
        loaded = identity == engine.identity_h  # the loaded run describes itself; an older one's answer less so
        page = render_answer_report(body, described_by_name,
                                    model_source=engine.served.inputs.model_info.source if loaded else None,
                                    n_rows=len(engine.corpus) if loaded else None)
        return HTMLResponse(page)

    @app.get("/v1/rows/{row_id}", summary="one training row: text and metadata")
    def row(row_id: str) -> Response:
        i = engine.row_index.get(row_id)
        if i is None:
            return _error(404, "row_id", f"row_id: no row {row_id[:80]!r} in this run")
        return JSONResponse(engine.row(i))

    install_error_handlers(app)
    return app


def _asset(body: bytes, mime: str):
    def get() -> Response:
        return Response(body, media_type=mime)

    return get


def _check_filter(engine: Engine, expression: str) -> None:
    from datablame.retrieval.filter import compile_filter  # api has no filter check of its own

    try:
        compile_filter(expression).mask(engine.corpus)
    except DatablameError as err:
        raise BadRequest(422, "filter", f"filter: {err.problem}") from None


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes even without a Content-Length (chunked)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


def _job_response(job, answer: bytes | None) -> Response:
    body = job.public()
    if job.state == "failed" and job.error_field == "run":  # the run changed on disk and did not reload
        return JSONResponse({"error": job.error, "field": "run", "job": body}, status_code=503,
                            headers={"Retry-After": "30"})
    if answer is not None:
        body["answer"] = json.loads(answer)
    return JSONResponse(body, status_code=200 if job.state in TERMINAL else 202,
                        headers={"X-Datablame-Cache": "hit" if job.cached else "miss"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(_TooLarge)
    async def too_large(request: Request, err: _TooLarge) -> Response:
        return _error(413, "body", f"body: larger than serve.max_body_bytes ({err.limit} bytes)")
