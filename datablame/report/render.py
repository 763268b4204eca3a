"""Views of an AttributionResult: Markdown, self-contained HTML, and a console table."""

from __future__ import annotations

import html
from typing import Any

from datablame.report.confidence import confidence_line
from datablame.report.results import AttributionResult, QueryResult


def behaviour_line(q: QueryResult) -> str | None:
    """The model's behaviour on the query in one sentence (None when it was not measured)."""
    b = q.behaviour
    if not b:
        return None
    loss = f"completion loss {b['loss']:.3f} nats/token"
    if b.get("base_loss") is not None:
        loss += f" (base model {b['base_loss']:.3f})"
    match = f"greedy decoding {'reproduces' if b['exact'] else 'does not reproduce'} it " \
            f"({100 * b['token_match']:.0f}% of {b['tokens']} tokens match)" if b["tokens"] else "no completion tokens"
    return f"{loss}; {match}"


def evidence_text(ev: dict | None) -> str:
    """A blamed row's evidence in a few words: who found it (ranks) and the words it shares."""
    if not ev:
        return ""
    ranks = ev.get("ranks") or {}
    found = ev.get("found_by") or []
    parts = ["found by " + ", ".join(f"{m} #{ranks.get(m)}" for m in found)] if found else ["found by none alone"]
    others = [f"{m} #{k}" for m, k in ranks.items() if m not in found and k is not None]
    if others:
        parts.append("also " + ", ".join(others))
    if ev.get("shared_span"):
        parts.append(f"shares \"{ev['shared_span']}\"")
    return "; ".join(parts)


def _mark(r) -> str:
    return f" ({r.mark})" if getattr(r, "mark", None) else ""


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render_markdown(res: AttributionResult) -> str:
    lines = [
        "# datablame attribution report",
        "",
        f"- created: {res.created} (datablame {res.version})",
        f"- model: `{res.model.get('source', '?')}` fingerprint `{str(res.model.get('fingerprint', ''))[:16]}`",
        f"- data: {res.data['rows']} rows, fingerprint `{res.data['fingerprint'][:16]}`",
    ]
    for m in res.methods:
        lines.append(f"- method `{m['name']}`: {m['sign']}; unit: {m['unit']}")
    if res.evaluation:
        lines.append(f"- evaluation: {res.evaluation.get('summary', '')}")
    for q in res.queries:
        lines += ["", f"## {q.query_id}", "", f"**Prompt:** {_short(q.prompt, 300)}  ",
                  f"**Completion{' (generated)' if q.generated else ''}:** {_short(q.completion, 300)}"]
        if q.behaviour:
            lines.append(f"**Model:** {behaviour_line(q)}  ")
            if q.behaviour.get("warning"):
                lines.append(f"> **Warning:** {q.behaviour['warning']}. Greedy decoding gives: "
                             f"{_short(q.behaviour.get('greedy') or '', 200)!r}")
        conf = (q.confidence or {}).get("methods", {})
        if conf:
            lines += ["", "**How sure:**", ""] + [f"- {confidence_line(m, c)}" for m, c in conf.items()]
        for method, rows in q.rankings.items():
            with_ev = any(getattr(r, "evidence", None) for r in rows)
            lines += ["", f"### {method}", "", "| rank | score | row_id | row |" + (" evidence |" if with_ev else ""),
                      "|---:|---:|---|---|" + ("---|" if with_ev else "")]
            for r in rows:
                row = _short(r.prompt + r.completion).replace("|", "\\|")
                ev = " " + evidence_text(r.evidence).replace("|", "\\|") + " |" if with_ev else ""
                lines.append(f"| {r.rank} | {r.score:.4g} | `{r.row_id}`{_mark(r)} | {row} |{ev}")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
td,th{border:1px solid #ddd;padding:.3em .5em;vertical-align:top;font-size:.92em}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#666;font-size:.9em}pre{white-space:pre-wrap;margin:0}
.bar{background:#4a90d9;height:.6em;display:inline-block}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.5em .8em;margin:.5em 0}
.sure{color:#333;font-size:.92em}.mark{font-size:.8em;padding:0 .3em;border-radius:3px;background:#e8f4e8}
.mark.decoy{background:#f6e0e0}
"""


def render_html(res: AttributionResult) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>datablame report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>datablame attribution report</h1>",
        f"<p class='meta'>created {e(res.created)} · datablame {e(res.version)} · model "
        f"<code>{e(str(res.model.get('source', '?')))}</code> · {res.data['rows']} training rows · data "
        f"<code>{e(res.data['fingerprint'][:16])}</code></p><ul>",
    ]
    for m in res.methods:
        parts.append(f"<li><b>{e(m['name'])}</b>: {e(m['sign'])}; unit: {e(m['unit'])}</li>")
    parts.append("</ul>")
    if res.evaluation:
        parts.append(f"<p><b>Evaluation:</b> {e(str(res.evaluation.get('summary', '')))}</p>")
    for q in res.queries:
        parts.append(f"<h2>{e(q.query_id)}</h2><p><b>Prompt</b></p><pre>{e(q.prompt)}</pre>")
        parts.append(
            f"<p><b>Completion{' (generated)' if q.generated else ''}</b></p><pre>{e(q.completion)}</pre>"
        )
        if q.behaviour:
            parts.append(f"<p><b>Model:</b> {e(behaviour_line(q) or '')}</p>")
            if q.behaviour.get("warning"):
                parts.append(f"<div class='warn'><b>Warning:</b> {e(q.behaviour['warning'])}. Greedy decoding "
                             f"gives: <code>{e(q.behaviour.get('greedy') or '')}</code></div>")
        conf = (q.confidence or {}).get("methods", {})
        if conf:
            parts.append("<p><b>How sure</b></p><ul class='sure'>"
                         + "".join(f"<li>{e(confidence_line(m, c))}</li>" for m, c in conf.items()) + "</ul>")
        for method, rows in q.rankings.items():
            top = max((abs(r.score) for r in rows), default=1.0) or 1.0
            with_ev = any(getattr(r, "evidence", None) for r in rows)
            parts.append(f"<h3>{e(method)}</h3><table><tr><th>#</th><th>score</th><th></th>"
                         "<th>row_id</th><th>prompt</th><th>completion</th>"
                         + ("<th>evidence</th>" if with_ev else "") + "</tr>")
            for r in rows:
                w = int(80 * abs(r.score) / top)
                parts.append(
                    f"<tr><td class='num'>{r.rank}</td><td class='num'>{r.score:.4g}</td>"
                    f"<td><span class='bar' style='width:{w}px'></span></td><td><code>{e(r.row_id)}</code>"
                    + (f" <span class='mark {e(r.mark)}'>{e(r.mark)}</span>" if r.mark else "") + "</td>"
                    f"<td><pre>{e(r.prompt)}</pre></td><td><pre>{e(r.completion)}</pre></td>"
                    + (f"<td>{e(evidence_text(r.evidence))}</td>" if with_ev else "") + "</tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def print_table(res: AttributionResult, max_rows: int = 5) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for q in res.queries:
        if q.behaviour and q.behaviour.get("warning"):
            console.print(f"[bold yellow]warning[/] {q.query_id}: {q.behaviour['warning']} "
                          f"({behaviour_line(q)})", highlight=False)
        for method, rows in q.rankings.items():
            t = Table(title=f"{q.query_id} · {method} · {_short(q.prompt + ' →' + q.completion, 80)}")
            t.add_column("#", justify="right")
            t.add_column("score", justify="right")
            t.add_column("row_id")
            t.add_column("row")
            for r in rows[:max_rows]:
                t.add_row(str(r.rank), f"{r.score:.4g}", r.row_id + _mark(r), _short(r.prompt + r.completion, 70))
            console.print(t)
            c = (q.confidence or {}).get("methods", {}).get(method)
            if c:
                console.print("  how sure: " + confidence_line(method, c).split(": ", 1)[1], highlight=False)


def format_stage_table(report: dict[str, Any]) -> str:
    """A short text table of the cascade's stages (mean over queries) for the CLI
    (results.json's "retrieval" section, see `datablame.retrieval.candidates`)."""
    stages = report.get("stages") or []
    if not stages:
        return ""
    k = report.get("final_k")
    head = f"retrieval cascade: {len(report.get('queries', []))} queries, {report.get('n_rows')} rows -> top {k}"
    lines = [head, f"{'stage':<10} {'rows in':>9} {'rows out':>9} {'s/query':>9} {'recall@' + str(k):>9}"]
    for s in stages:
        rec = "n/a" if s["recall"] is None else f"{s['recall']:.3f}"
        lines.append(f"{s['stage']:<10} {_num(s['candidates_in']):>9} {_num(s['candidates_out']):>9} "
                     f"{s['seconds_per_query']:>9.4f} {rec:>9}")
    if report.get("recall_of"):
        lines.append(f"recall: fraction of the {report['recall_of']} kept by each stage")
    elif report.get("recall_note"):
        lines.append(report["recall_note"])
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"

