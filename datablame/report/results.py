"""The attribution result: what was asked, of which model and data, and the ranked rows."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datablame.data.corpus import Corpus, Query
from datablame.layout import AttributionLayout
from datablame.utils.io import atomic_write_json, atomic_write_text


@dataclass
class RankedRow:
    rank: int
    row_id: str
    score: float
    prompt: str
    completion: str
    metadata: dict[str, Any] = field(default_factory=dict)
    mark: str | None = None  # synthetic corpora: "planted" (the query's ground truth) or "decoy"
    evidence: dict[str, Any] | None = None  # what supports the row (fusion: rank per component, shared words)


@dataclass
class QueryResult:
    query_id: str
    prompt: str
    completion: str
    generated: bool
    rankings: dict[str, list[RankedRow]]  # method name -> top-k rows
    # does the model produce this completion (datablame.features.behaviour): loss, greedy match, warning
    behaviour: dict[str, Any] | None = None
    # how sure each method's ranking is (datablame.report.confidence): separation, agreement, checks
    confidence: dict[str, Any] = field(default_factory=dict)
    # a behaviour-level query: the other completions it is measured over, and its contrast set
    measured_over: dict[str, list[str]] | None = None


@dataclass
class AttributionResult:
    version: str
    created: str
    config: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    methods: list[dict[str, str]]
    queries: list[QueryResult]
    timing: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)  # cascade stages when attribution.retrieval.enabled

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, ties broken by row order (stable, deterministic)."""
    order = np.argsort(-scores, kind="stable")
    return order[: min(k, len(order))]


def build_result(
    *,
    version: str,
    config: dict[str, Any],
    model_info: dict[str, Any],
    corpus: Corpus,
    queries: list[Query],
    generated: list[bool],
    scores: dict[str, np.ndarray],
    methods: list[dict[str, str]],
    k: int,
    timing: dict[str, float] | None = None,
) -> AttributionResult:
    qresults = []
    for qi, q in enumerate(queries):
        rankings = {}
        for name, mat in scores.items():
            rankings[name] = [
                RankedRow(
                    rank=rank + 1,
                    row_id=corpus[int(j)].row_id,
                    score=float(mat[qi, j]),
                    prompt=corpus[int(j)].prompt,
                    completion=corpus[int(j)].completion,
                    metadata=dict(corpus[int(j)].metadata),
                )
                for rank, j in enumerate(top_k(mat[qi], k))
            ]
        over = {"behaviour": list(q.behaviour), "contrast": list(q.contrast)} if q.is_behaviour else None
        qresults.append(QueryResult(q.query_id, q.prompt, q.completion or "", generated[qi], rankings,
                                    measured_over=over))
    return AttributionResult(
        version=version,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        config=config,
        model=model_info,
        data={"fingerprint": corpus.fingerprint(), "rows": len(corpus), "report": corpus.report},
        methods=methods,
        queries=qresults,
        timing=timing or {},
    )


def write_result(result: AttributionResult, out_dir: str | Path) -> dict[str, Path]:
    """results.json (source of truth), results.md and report.html, each written atomically."""
    from datablame.report.render import render_html, render_markdown

    layout = AttributionLayout(out_dir)
    paths = {
        "json": atomic_write_json(layout.results_json, result.to_dict()),
        "markdown": atomic_write_text(layout.results_md, render_markdown(result)),
        "html": atomic_write_text(layout.report_html, render_html(result)),
    }
    return paths


def load_result(path: str | Path) -> AttributionResult:
    from datablame.utils.safe_load import read_json

    raw = read_json(path, what="attribution result", fix="attribute again (datablame attribute --config ...)")
    queries = [
        QueryResult(
            **{k: v for k, v in q.items() if k != "rankings"},
            rankings={m: [RankedRow(**r) for r in rows] for m, rows in q["rankings"].items()},
        )
        for q in raw.pop("queries")
    ]
    return AttributionResult(**raw, queries=queries)
