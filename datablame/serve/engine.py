"""The loaded run behind `datablame serve`: one `api.prepare_serving` context, owned by the
worker thread, that turns a validated request into the answer's canonical bytes.

The answer holds nothing that changes between two computations of the same request (no job
id, no timing, no clock: the cascade's stage table keeps candidates and recall, its seconds go
to the job), and is serialised with sorted keys, so the cache can hand back the very bytes a
fresh computation would produce.

Model or store changed on disk while serving (`stale()`: the attributed model's files or the
feature store's manifest have another stamp): no cached answer is served (the HTTP layer skips
the cache), and the worker reloads the run before the next job; the identity, and so every
cache key, changes with it. When that reload fails (say the model was retrained but the store
not rebuilt, so they no longer match), the old model is not used either: `reload_error` holds
the reason and the fix, and the service refuses queries with 503 until the files change again
(the next request then retries the reload) or the server is restarted.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datablame import api
from datablame.config import RunConfig
from datablame.errors import DatablameError
from datablame.layout import RunLayout
from datablame.serve.cache import cache_key, identity_hash, report_path
from datablame.store.manifest import MANIFEST, ROW_IDS

log = logging.getLogger("datablame")

RESTART = "or restart `datablame serve`"
# part of the identity, so answers cached in an earlier shape are dropped at start, never served
# (2: the answer carries `report_url`)
ANSWER_FORMAT = 2


def _model_dir(cfg: RunConfig, run_dir: Path) -> Path:
    ck = cfg.attribution.checkpoint
    return Path(ck) if ck else RunLayout(run_dir).final_model


def _stamp(cfg: RunConfig, run_dir: Path) -> tuple:
    """Stamps (path, inode, mtime, size) of what a loaded run depends on: the attributed
    model's files and the feature store's manifest and row ids (which `datablame index`
    rewrites last). Files the loading itself writes (the store's verification cache) are left
    out, so loading never makes the run look changed."""
    paths = []
    model = _model_dir(cfg, run_dir)
    if model.is_dir():
        paths += sorted(p for p in model.rglob("*") if p.is_file())
    elif model.is_file():
        paths.append(model)
    store = RunLayout(run_dir).store_dir
    paths += [store / MANIFEST, store / ROW_IDS]
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_ino, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append((str(p), None))
    return tuple(out)


class Engine:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.output.dir)
        self._lock = threading.Lock()
        self.reloads = 0
        self._failed_stamp: tuple | None = None
        self.reload_error: str | None = None
        self._load(_stamp(cfg, self.run_dir))

    def _load(self, stamp: tuple) -> None:
        served = api.prepare_serving(self.cfg)
        with self._lock:
            self.served, self._stamp_at_load = served, stamp
            self.identity_h = identity_hash({**served.identity, "answer_format": ANSWER_FORMAT})
            self.corpus = served.inputs.corpus
            self.row_index = {r.row_id: i for i, r in enumerate(self.corpus)}
            self._failed_stamp, self.reload_error = None, None

    def stale(self) -> bool:
        """The model or store on disk is not the one loaded."""
        return _stamp(self.cfg, self.run_dir) != self._stamp_at_load

    def unavailable(self) -> str | None:
        """Why queries are refused now: the last reload failed and the files have not changed
        since (None: serving, or the next job retries the reload)."""
        with self._lock:
            failed, error = self._failed_stamp, self.reload_error
        if failed is None:
            return None
        return error if _stamp(self.cfg, self.run_dir) == failed else None

    def key_if_fresh(self, request: dict[str, Any]) -> str | None:
        """The cache key under the loaded identity, or None when the files on disk are not
        the loaded ones (then no cached answer may be served: the worker reloads first)."""
        with self._lock:
            identity_h, stamp = self.identity_h, self._stamp_at_load
        if _stamp(self.cfg, self.run_dir) != stamp:
            return None
        return cache_key(identity_h, request)

    def reload_if_stale(self) -> bool:
        """Reload when the model or store changed on disk (worker thread, between jobs).
        A failed reload raises `RunChanged` and leaves the old model unused."""
        stamp = _stamp(self.cfg, self.run_dir)
        if stamp == self._stamp_at_load:
            return False
        log.info("the run's model or feature store changed on disk: reloading")
        try:
            self._load(stamp)
        except Exception as err:  # noqa: BLE001 - half-written files raise anything; the reason is kept
            problem, fix = (err.problem, err.fix) if isinstance(err, DatablameError) else (
                f"{type(err).__name__}: {err}", "check the run's model and store files")
            message = (f"run: the model or feature store of {self.run_dir} changed on disk while serving, and "
                       f"reloading it failed: {problem}")
            fix = f"{fix.rstrip('.') if fix else 'fix the run'}; the next request retries the reload, {RESTART}"
            with self._lock:
                self._failed_stamp, self.reload_error = stamp, f"{message} (fix: {fix})"
            log.warning("%s (%s)", message, fix)
            raise RunChanged(message, fix) from None
        self.reloads += 1
        return True

    @property
    def cascade(self) -> bool:
        return self.cfg.attribution.retrieval.enabled

    def key(self, request: dict[str, Any]) -> str:
        return cache_key(self.identity_h, request)

    def row(self, index: int) -> dict[str, Any]:
        r = self.corpus[index]
        return {"row_id": r.row_id, "index": index, "prompt": r.prompt, "completion": r.completion,
                "metadata": dict(r.metadata)}

    def answer(self, request: dict[str, Any], progress: Callable[[float, str], None] | None = None,
               cancelled: Callable[[], bool] | None = None, timing: dict[str, Any] | None = None) -> bytes:
        """The canonical answer bytes of a validated request (prompt, completion, methods, k,
        filter, cascade). Without the cascade, methods run one by one so progress and
        cancellation can act between them; with it, one `api.attribute_query` call runs the
        cascade (metadata filter -> embedding -> BM25 -> gradient re-rank) as `datablame
        attribute` does, and the answer carries its stage table. `timing` receives the
        cascade's seconds (not part of the answer: they change between two computations)."""
        methods = request["methods"]
        cascade = request.get("cascade")
        rankings: dict[str, list[dict]] = {}
        retrieval = completion = generated = None
        groups = [methods] if cascade else [[m] for m in methods]
        for i, group in enumerate(groups):
            if cancelled is not None and cancelled():
                raise JobCancelled()
            if progress is not None:
                progress(i / len(groups), "running the cascade (filter, embedding, BM25, gradient re-rank) for "
                         f"{', '.join(group)}" if cascade else f"running {', '.join(group)}")
            # a generated completion is fixed by the first method's pass: later ones reuse it
            done = api.attribute_query(self.served, request["prompt"],
                                       request["completion"] if completion is None else completion,
                                       methods=group, k=request["k"], row_filter=request["filter"],
                                       cascade=cascade if cascade else False)
            if completion is None:
                completion, generated = done["completion"], done["generated"]
            rankings.update(done["rankings"])
            retrieval = done["retrieval"] if done["retrieval"] is not None else retrieval
        body = {
            "query": {"prompt": request["prompt"], "completion": completion, "generated": generated},
            "k": request["k"], "methods": methods, "filter": request["filter"],
            "run": {"identity": self.identity_h, "model": self.served.identity["model"],
                    "data": self.served.identity["data"], "store": self.served.identity["store"] is not None},
            "rankings": {m: [{**e, **self.row(e["index"])} for e in rows] for m, rows in rankings.items()},
            "rows": self._side_by_side(rankings, methods),
            "retrieval": None if retrieval is None else stage_table(retrieval, timing),
            # content-addressed (the cache key, not the job): the same for a cached and a fresh answer
            "report_url": report_path(self.key(request)),
        }
        return canonical(body)

    def _side_by_side(self, rankings: dict[str, list[dict]], methods: list[str]) -> list[dict]:
        """Every row some method ranked, with each method's rank and score (None: not in its
        top k), ordered by best rank, then by how many methods ranked it."""
        seen: dict[int, dict] = {}
        for m in methods:
            for e in rankings.get(m, []):
                entry = seen.setdefault(e["index"], {"row_id": e["row_id"], "index": e["index"],
                                                    "ranks": dict.fromkeys(methods), "scores": dict.fromkeys(methods)})
                entry["ranks"][m], entry["scores"][m] = e["rank"], e["score"]
        rows = sorted(seen.values(), key=lambda r: (min(v for v in r["ranks"].values() if v is not None),
                                                    -sum(v is not None for v in r["ranks"].values()), r["index"]))
        return rows


class JobCancelled(Exception):
    """A job was cancelled while its methods ran (raised between methods)."""


class RunChanged(DatablameError):
    """The run's model or store changed on disk and could not be reloaded (HTTP 503)."""


def stage_table(report: dict[str, Any], timing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cascade's report without what changes between two computations of the same query:
    per stage the candidates in and out and the recall (of the exhaustive gradient-cosine top
    k, when the feature store makes it cheap); the seconds go to `timing`."""
    stages = [{k: s[k] for k in ("stage", "candidates_in", "candidates_out", "recall")} for s in report["stages"]]
    queries = report.get("queries") or [{}]
    if timing is not None:
        timing["cascade_s"] = report.get("seconds")
        timing["stages_s"] = {s["stage"]: s.get("seconds_total") for s in report["stages"]}
    return {
        "stages": stages, "n_rows": report.get("n_rows"), "final_k": report.get("final_k"),
        "recall_k": report.get("recall_k"), "recall_of": report.get("recall_of"),
        "recall_note": report.get("recall_note"), "config": report.get("config"),
        "candidates": report.get("candidates"), "method_scoring": report.get("method_scoring"),
        "row_ids": queries[0].get("row_ids"),
    }


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_plain).encode()


def _plain(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
