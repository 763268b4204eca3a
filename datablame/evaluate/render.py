"""Markdown and HTML views of an evaluation result (the JSON is the source of truth)."""

from __future__ import annotations

import html
from typing import Any


def _num(s: dict[str, Any] | None) -> str:
    if not s or s.get("mean") is None or s["mean"] != s["mean"]:
        return "-"
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def _md_cell(text: str, limit: int = 400) -> str:
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or " "


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = [m["name"] for m in result["models"]]
    rows = [[metric, *(_num(per.get(n)) for n in names)] for metric, per in result["summary"].items()]
    return ["metric", *names], rows


def render_markdown(result: dict[str, Any]) -> str:
    names = [m["name"] for m in result["models"]]
    out = ["# Evaluation: did the fine-tune help?", ""]
    out += [f"- {m['name']}: `{m['source']}`" for m in result["models"]]
    out.append("")
    if result["summary"]:
        out += ["## Scores (mean, 95% bootstrap CI)", "", *_md_table(*summary_rows(result)), ""]
    for what, why in result.get("skipped", {}).items():
        out.append(f"- {what} skipped: {why}")
    if "bertscore" in result:
        out += [f"BERTScore: {result['bertscore']['model']} layer {result['bertscore']['num_layers']}, "
                f"{result['bertscore']['note']}.", ""]
    if "mmlu" in result:
        mm = result["mmlu"]
        out += [f"## Multiple choice ({mm['source']}, {mm['k_shot']}-shot, accuracy)", ""]
        rows = [[s, str(n), *(_num(mm["models"][m]["subjects"][s]["accuracy"]) for m in names)]
                for s, n in mm["subjects"].items()]
        out += [*_md_table(["subject", "questions", *names], rows), ""]
    if "generation" in result:
        out += ["## Completions side by side", ""]
        with_refs = any(r["references"] for r in result["generation"]["rows"])
        head = ["id", "prompt", *(["reference"] if with_refs else []), *names]
        rows = [[_md_cell(r["id"]), _md_cell(r["prompt"]),
                 *([_md_cell(" / ".join(r["references"]))] if with_refs else []),
                 *(_md_cell(r["completions"][n]) for n in names)] for r in result["generation"]["rows"]]
        out += [*_md_table(head, rows), ""]
    for chart in result.get("charts", []):
        out += [f"![{chart}]({chart})", ""]
    return "\n".join(out).rstrip() + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;white-space:pre-wrap;max-width:40em}")


def render_html(result: dict[str, Any]) -> str:
    names = [m["name"] for m in result["models"]]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>evaluation</title><style>{_STYLE}</style>"
             "</head><body><h1>Evaluation: did the fine-tune help?</h1>"]
    parts.append("<ul>" + "".join(f"<li>{html.escape(m['name'])}: <code>{html.escape(m['source'])}</code></li>"
                                  for m in result["models"]) + "</ul>")
    if result["summary"]:
        parts += ["<h2>Scores (mean, 95% bootstrap CI)</h2>", _html_table(*summary_rows(result))]
    for chart in result.get("charts", []):
        parts.append(f"<img src='{html.escape(chart)}' alt='{html.escape(chart)}' style='max-width:100%'>")
    if "generation" in result:
        rows = [[r["id"], r["prompt"], "\n".join(r["references"]), *(r["completions"][n] for n in names)]
                for r in result["generation"]["rows"]]
        parts += ["<h2>Completions side by side</h2>", _html_table(["id", "prompt", "reference", *names], rows)]
    parts.append("</body></html>")
    return "\n".join(parts)
