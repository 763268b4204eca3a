"""The HTML report of one served answer (`GET /v1/reports/{id}`): the answer turned into the
`AttributionResult` that `datablame attribute` writes, rendered by the same `render_html`
(the same page as report.html: inline CSS, no CDN), with the request's settings and the
cascade's stage table added after the rankings.

The page is a function of the answer's bytes and of what the loaded run says about itself
(the methods' sign and unit, the model's source, the number of rows), never of the job or the
clock, so a cached answer's report is identical to a fresh one's.
"""

from __future__ import annotations

import html
import json
from typing import Any

from datablame import __version__
from datablame.report.render import render_html
from datablame.report.results import AttributionResult, QueryResult, RankedRow

CREATED = "by datablame serve"  # render_html prints "created <this>"; a clock would differ per job


def answer_result(answer: dict[str, Any], described: dict[str, dict[str, Any]], *, model_source: str | None,
                  n_rows: int | None) -> AttributionResult:
    """The served answer as the result `datablame attribute` builds (one query, `query`)."""
    q = answer["query"]
    rankings = {m: [RankedRow(rank=r["rank"], row_id=r["row_id"], score=r["score"], prompt=r["prompt"],
                              completion=r["completion"], metadata=dict(r.get("metadata") or {}))
                    for r in rows]
                for m, rows in answer["rankings"].items()}
    run = answer["run"]
    methods = [{"name": m, "sign": str(described.get(m, {}).get("sign", "?")),
                "unit": str(described.get(m, {}).get("unit", "?"))} for m in answer["methods"]]
    rows = n_rows if n_rows is not None else (answer.get("retrieval") or {}).get("n_rows", "?")
    return AttributionResult(
        version=__version__, created=CREATED, config={},
        model={"source": model_source or f"fingerprint {run.get('model')}", "fingerprint": run.get("model")},
        data={"fingerprint": str(run.get("data") or ""), "rows": rows},
        methods=methods, queries=[QueryResult("query", q["prompt"], q["completion"] or "", bool(q["generated"]),
                                              rankings)],
    )


def render_answer_report(answer_bytes: bytes, described: dict[str, dict[str, Any]], *,
                         model_source: str | None = None, n_rows: int | None = None) -> str:
    """report.html for one served answer (`described`: `api.describe_methods()` by name;
    `model_source`, `n_rows`: the loaded run's, when the answer is of the loaded identity)."""
    answer = json.loads(answer_bytes)
    page = render_html(answer_result(answer, described, model_source=model_source, n_rows=n_rows))
    return page.replace("</body></html>", _served_section(answer) + "\n</body></html>", 1)


def _served_section(answer: dict[str, Any]) -> str:
    e = html.escape
    run = answer["run"]
    parts = ["<h2>Request</h2><ul>",
             f"<li>k: {int(answer['k'])}</li>",
             f"<li>methods: {e(', '.join(answer['methods']))}</li>",
             f"<li>metadata filter: <code>{e(answer['filter'] or 'none')}</code></li>",
             f"<li>run identity <code>{e(str(run.get('identity')))}</code> · model <code>"
             f"{e(str(run.get('model'))[:16])}</code> · feature store: {'yes' if run.get('store') else 'no'}</li>",
             "</ul>"]
    retrieval = answer.get("retrieval")
    if retrieval:
        k = retrieval.get("final_k")
        parts.append(f"<h2>Retrieval cascade</h2><p class='meta'>{e(str(retrieval.get('n_rows')))} rows → top "
                     f"{e(str(k))}</p><table><tr><th>stage</th><th>rows in</th><th>rows out</th>"
                     f"<th>recall@{e(str(k))}</th></tr>")
        for s in retrieval.get("stages") or []:
            recall = "n/a" if s.get("recall") is None else f"{s['recall']:.3f}"
            parts.append(f"<tr><td>{e(str(s['stage']))}</td><td class='num'>{e(_num(s['candidates_in']))}</td>"
                         f"<td class='num'>{e(_num(s['candidates_out']))}</td><td class='num'>{recall}</td></tr>")
        parts.append("</table>")
        note = (f"recall: fraction of the {retrieval['recall_of']} kept by each stage" if retrieval.get("recall_of")
                else retrieval.get("recall_note"))
        if note:
            parts.append(f"<p class='meta'>{e(str(note))}</p>")
    return "\n".join(parts)


def _num(x: Any) -> str:
    try:
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    except (TypeError, ValueError):
        return str(x)

