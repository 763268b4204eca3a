"""Jobs of `datablame serve`: a bounded queue, one worker thread that owns the model, and the
job table in SQLite (`<run>/serve/jobs.sqlite`) so a restart can say what happened.

States: queued -> running -> done | failed | cancelled. A job still queued or running when
the process stops (crash, kill) is marked failed at the next start, with the reason. A full
queue refuses new work (`QueueFull`: the HTTP layer answers 503 with Retry-After). Cancelling
a queued job drops it; a running one stops between methods (a method itself is not
interrupted; the cascade runs as one step) and its answer is discarded.

Memory and disk: the runner keeps the jobs not yet finished and the last `RECENT` finished
ones in memory (older ones are read back from the table), and the table keeps the last
`serve.jobs_kept` finished jobs (older ones are deleted, their pages reused), so a
long-running server grows with neither the number of requests.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datablame.errors import DatablameError
from datablame.serve.cache import report_path
from datablame.serve.db import ThreadLocalSQLite
from datablame.serve.engine import Engine, JobCancelled, RunChanged

log = logging.getLogger("datablame")

TERMINAL = ("done", "failed", "cancelled")
RECENT = 256  # finished jobs kept in memory (older ones are read from the table)
RESTART_REASON = "the server stopped before this job finished (restarted at {when}); submit the query again"


class QueueFull(Exception):
    """The bounded job queue is full (the API answers 503 with Retry-After)."""


@dataclass
class Job:
    id: str
    request: dict[str, Any]
    key: str
    state: str = "queued"
    progress: float = 0.0
    message: str = "queued"
    error: str | None = None
    cached: bool = False
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    error_field: str | None = None  # "run": the run changed on disk and could not be reloaded (HTTP 503)
    timing: dict[str, Any] = field(default_factory=dict)  # seconds of this computation (not in the answer)

    def public(self) -> dict[str, Any]:
        out = {"id": self.id, "state": self.state, "progress": round(self.progress, 3), "message": self.message,
               "error": self.error, "cached": self.cached, "created": self.created, "finished": self.finished,
               "cancel_requested": self.cancel.is_set() and self.state not in TERMINAL,
               "result": f"/v1/attributions/{self.id}" if self.state == "done" else None,
               "report_url": report_path(self.key) if self.state == "done" else None}
        if self.timing:
            out["timing"] = self.timing
        return out


class JobTable(ThreadLocalSQLite):
    """The jobs and their answers in SQLite (WAL; one connection per thread)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL, "
            "key TEXT NOT NULL, error TEXT, cached INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, "
            "finished REAL, answer BLOB)")
        self._conn().execute("CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key)")  # reports find answers by key

    def fail_unfinished(self) -> int:
        """At start: every job a previous process left queued or running is failed, with why."""
        reason = RESTART_REASON.format(when=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return self._conn().execute("UPDATE jobs SET state = 'failed', error = ?, finished = ? "
                                    "WHERE state IN ('queued', 'running')", (reason, time.time())).rowcount

    def save(self, job: Job, answer: bytes | None = None, *, state: str | None = None, error: str | None = None,
             finished: float | None = None) -> None:
        """Insert or update the job; `state`, `error`, `finished` override the job's own (the
        worker stores a finished job before the job itself says so)."""
        state, error = state or job.state, error if state else job.error
        finished = finished if finished is not None else job.finished
        self._conn().execute(
            "INSERT INTO jobs (id, state, request, key, error, cached, created, finished, answer) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, key = excluded.key, "
            "error = excluded.error, cached = excluded.cached, finished = excluded.finished, "
            "answer = COALESCE(excluded.answer, jobs.answer)",
            (job.id, state, json.dumps(job.request), job.key, error, int(job.cached), job.created,
             finished, answer))

    def load(self, job_id: str) -> Job | None:
        row = self._conn().execute("SELECT id, state, request, key, error, cached, created, finished FROM jobs "
                                   "WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = Job(row[0], json.loads(row[2]), row[3], state=row[1], error=row[4], cached=bool(row[5]),
                  created=row[6], finished=row[7])
        job.progress = 1.0 if job.state == "done" else 0.0
        job.message = job.state
        return job

    def prune(self, keep: int) -> int:
        """Delete all but the `keep` most recently finished jobs (unfinished ones stay)."""
        return self._conn().execute(
            "DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND id NOT IN (SELECT id FROM jobs "
            "WHERE state IN ('done', 'failed', 'cancelled') ORDER BY finished DESC LIMIT ?)", (keep,)).rowcount

    def answer_for_key(self, key: str) -> bytes | None:
        """The answer of the latest finished job under this cache key (None: none kept)."""
        row = self._conn().execute("SELECT answer FROM jobs WHERE key = ? AND state = 'done' AND answer IS NOT NULL "
                                   "ORDER BY finished DESC LIMIT 1", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def answer(self, job_id: str) -> bytes | None:
        row = self._conn().execute("SELECT answer FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None


class JobRunner:
    """The bounded queue and the one worker thread; jobs of this process are kept in memory
    (for progress) and in the table (for state across restarts)."""

    def __init__(self, engine: Engine, table: JobTable, cache, *, queue_size: int, metrics=None,
                 jobs_kept: int = 10_000) -> None:
        self.engine, self.table, self.cache, self.metrics = engine, table, cache, metrics
        self.jobs_kept, self._since_prune = jobs_kept, 0
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.jobs: dict[str, Job] = {}  # not finished
        self.recent: OrderedDict[str, Job] = OrderedDict()  # the last RECENT finished
        self._lock = threading.Lock()
        self.failed_at_start = table.fail_unfinished()
        table.prune(jobs_kept)
        self._thread = threading.Thread(target=self._work, name="datablame-serve-worker", daemon=True)
        self._thread.start()

    def queue_length(self) -> int:
        return self.queue.qsize()

    def new_job(self, request: dict[str, Any], key: str) -> Job:
        return Job(uuid.uuid4().hex, request, key)

    def finish_cached(self, job: Job, answer: bytes) -> Job:
        job.state, job.progress, job.message, job.cached, job.finished = "done", 1.0, "cached", True, time.time()
        self.table.save(job, answer)
        self._finished(job)
        return job

    def _finished(self, job: Job) -> None:
        """Move a finished job from the live ones to the bounded recent ones."""
        with self._lock:
            self.jobs.pop(job.id, None)
            self.recent[job.id] = job
            self.recent.move_to_end(job.id)
            while len(self.recent) > RECENT:
                self.recent.popitem(last=False)
            self._since_prune += 1
            prune = self._since_prune >= max(1, min(500, self.jobs_kept // 10))
            if prune:
                self._since_prune = 0
        if prune:
            self.table.prune(self.jobs_kept)

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
        self.table.save(job)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.jobs.pop(job.id, None)
            job.state, job.error, job.finished = "failed", "the queue was full", time.time()
            self.table.save(job)
            raise QueueFull() from None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self.jobs.get(job_id) or self.recent.get(job_id)
        return job if job is not None else self.table.load(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is None or job.state in TERMINAL:
            return job
        job.cancel.set()
        if job.state == "queued":  # the worker skips it when it comes up
            job.state, job.message, job.finished = "cancelled", "cancelled while queued", time.time()
            self.table.save(job)
            self._finished(job)
            if self.metrics is not None:
                self.metrics.job_finished("cancelled", 0.0)
        else:
            job.message = "cancelling: stops before its next method"
        return job

    def wait(self, job: Job, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while job.state not in TERMINAL and time.monotonic() < end:
            time.sleep(0.01)
        return job.state in TERMINAL

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if job.cancel.is_set():
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        job.state, job.message = "running", "running"
        self.table.save(job)
        t = time.perf_counter()
        answer = None
        state, error, error_field = "done", None, None
        try:
            if self.engine.reload_if_stale():
                self.cache.drop_other_runs(self.engine.identity_h)
            job.key = self.engine.key(job.request)  # the identity may have changed since it was queued

            def progress(p: float, msg: str) -> None:
                job.progress, job.message = p, msg

            answer = self.engine.answer(job.request, progress, job.cancel.is_set, job.timing)
            if job.cancel.is_set():
                raise JobCancelled()
            self.cache.put(job.key, answer)
        except JobCancelled:
            state = "cancelled"
        except RunChanged as err:
            state, error, error_field = "failed", f"{err.problem} (fix: {err.fix})", "run"
        except DatablameError as err:
            state, error = "failed", f"{err.problem} ({err.fix})" if err.fix else err.problem
        except Exception as err:  # noqa: BLE001 - the worker must outlive any one job
            log.exception("job %s failed", job.id)
            state, error = "failed", f"{type(err).__name__}: {err}"
        finished = time.time()
        # stored first, then shown: a client that sees `done` finds the answer in the table
        self.table.save(job, answer if state == "done" else None, state=state, error=error, finished=finished)
        job.error, job.error_field, job.finished = error, error_field, finished
        job.progress = 1.0 if state == "done" else job.progress
        job.message = "cancelled while running" if state == "cancelled" else state
        job.state = state
        self._finished(job)
        if self.metrics is not None:
            self.metrics.job_finished(job.state, time.perf_counter() - t)
