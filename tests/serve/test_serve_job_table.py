"""The job table and the runner's memory stay bounded: `serve.jobs_kept` finished jobs on
disk (the oldest pruned, unfinished ones kept), the last few hundred in memory, older ones
read back from the table."""

from __future__ import annotations

import sqlite3

from datablame.serve.cache import NoCache
from datablame.serve.jobs import RECENT, JobRunner, JobTable


class _IdleEngine:
    """The runner needs an engine only for jobs it runs; these are all finished from the cache."""


def test_finished_jobs_are_pruned_to_jobs_kept_and_memory_stays_bounded(tmp_path):
    table = JobTable(tmp_path / "jobs.sqlite")
    runner = JobRunner(_IdleEngine(), table, NoCache(), queue_size=4, jobs_kept=10)
    try:
        waiting = runner.new_job({"prompt": "waiting"}, "k")
        table.save(waiting)  # queued: never pruned
        ids = []
        for i in range(RECENT + 40):
            job = runner.new_job({"prompt": f"q{i}"}, f"key{i}")
            runner.finish_cached(job, b'{"answer": %d}' % i)
            ids.append(job.id)
        with sqlite3.connect(tmp_path / "jobs.sqlite") as conn:
            states = [r[0] for r in conn.execute("SELECT state FROM jobs")]
        assert sorted(states) == ["done"] * 10 + ["queued"]
        assert len(runner.recent) == RECENT and not runner.jobs
        assert runner.get(ids[-1]).state == "done" and table.answer(ids[-1]) == b'{"answer": %d}' % (RECENT + 39)
        assert runner.get(ids[0]) is None  # pruned: the API answers 404
        assert runner.get(waiting.id).state == "queued"
    finally:
        runner.stop()
