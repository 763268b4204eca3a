"""The loaded run behind `datablame serve`: one `api.prepare_serving` context, owned by the
worker thread, that turns a validated request into the answer's canonical bytes.

The answer holds nothing that changes between two computations of the same request (no job
id, no timing, no clock), and is serialised with sorted keys, so the cache can hand back the
very bytes a fresh computation would produce. When the run's model or feature store changes on
disk (`stale()`), the worker reloads before the next job; the identity, and so every cache key,
changes with it.
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
from datablame.serve.cache import cache_key, identity_hash

log = logging.getLogger("datablame")


def _stamp(run_dir: Path) -> tuple:
    """Modification stamps of what a loaded run depends on: the final model's files and the
    feature store's manifest (a cheap stat per file)."""
    out = []
    for sub in ("model/final", "store"):
        d = run_dir / sub
        if d.is_dir():
            out += sorted((str(p.relative_to(run_dir)), p.stat().st_mtime_ns, p.stat().st_size)
                          for p in d.iterdir() if p.is_file())
    return tuple(out)


class Engine:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.output.dir)
        self._lock = threading.Lock()
        self.reloads = 0
        self._load()

    def _load(self) -> None:
        stamp = _stamp(self.run_dir)
        served = api.prepare_serving(self.cfg)
        with self._lock:
            self.served, self._stamp_at_load = served, stamp
            self.identity_h = identity_hash(served.identity)
            self.corpus = served.inputs.corpus
            self.row_index = {r.row_id: i for i, r in enumerate(self.corpus)}

    def stale(self) -> bool:
        return _stamp(self.run_dir) != self._stamp_at_load

    def reload_if_stale(self) -> bool:
        if not self.stale():
            return False
        log.info("the run's model or store changed on disk: reloading")
        self._load()
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
               cancelled: Callable[[], bool] | None = None) -> bytes:
        """The canonical answer bytes of a validated request (prompt, completion, methods, k,
        filter). Without the cascade, methods run one by one so progress and cancellation can
        act between them."""
        methods = request["methods"]
        rankings: dict[str, list[dict]] = {}
        retrieval = completion = generated = None
        groups = [methods] if self.cascade else [[m] for m in methods]
        for i, group in enumerate(groups):
            if cancelled is not None and cancelled():
                raise JobCancelled()
            if progress is not None:
                progress(i / len(groups), f"running {', '.join(group)}")
            # a generated completion is fixed by the first method's pass: later ones reuse it
            done = api.attribute_query(self.served, request["prompt"],
                                       request["completion"] if completion is None else completion,
                                       methods=group, k=request["k"], row_filter=request["filter"])
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
            "retrieval": retrieval,
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
