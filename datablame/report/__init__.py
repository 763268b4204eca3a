"""Results as plain data (JSON is the source of truth) and their Markdown/HTML/console views."""

from datablame.report.render import format_stage_table, print_table, render_html, render_markdown
from datablame.report.results import (
    AttributionResult,
    QueryResult,
    RankedRow,
    build_result,
    load_result,
    write_result,
)

__all__ = [
    "AttributionResult",
    "QueryResult",
    "RankedRow",
    "build_result",
    "format_stage_table",
    "load_result",
    "print_table",
    "render_html",
    "render_markdown",
    "write_result",
]
