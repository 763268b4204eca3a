"""README inclusion of Markdown files written by other commands (`datablame bench
--results-dir`, `<name>.readme.md`): headings moved to level 3, image links into
benchmarks/results/. Used by readme_tables.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_REL = "benchmarks/results"

_IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s/:#]+\.(?:png|svg|jpe?g|gif))(\))")


def readme_section(text: str, title: str | None = None) -> str:
    """A Markdown file as a README subsection: headings shifted so the top one is level 3 (a
    `title` heading is added when the file has none), relative image links into benchmarks/results/."""
    lines, fenced, levels = text.strip().splitlines(), False, []
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            levels.append(len(line) - len(line.lstrip("#")))
    shift = 3 - min(levels) if levels else 0
    out, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            n = len(line) - len(line.lstrip("#"))
            line = "#" * max(1, min(6, n + shift)) + line[n:]
        elif not fenced:
            line = _IMAGE.sub(lambda m: m.group(1) + f"{RESULTS_REL}/" + m.group(2) + m.group(3), line)
        out.append(line)
    if title and not (out and out[0].startswith("#")):
        out = [f"### {title}", "", *out]
    return "\n".join(out)


def md_file_section(stem: str, title: str | None = None, retitle: bool = False) -> Callable[[], str | None]:
    """`title` heads a file that has no heading; with `retitle` it replaces the file's own."""
    def make() -> str | None:
        for name in (f"{stem}.readme.md", f"{stem}.md"):
            p = RESULTS / name
            if p.is_file():
                text = readme_section(p.read_text(), title)
                if retitle and title and text.startswith("#"):
                    text = f"### {title}" + text[text.index("\n"):] if "\n" in text else f"### {title}"
                return text
        return None

    return make
