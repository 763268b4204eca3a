"""Render a record into the (prompt, completion) pair the model is trained on.

The loss is taken on the completion only, so everything the model must *learn to say* goes
in the completion and everything it is *given* goes in the prompt. Templates (the strings
below are the contract; attribution queries must use the same ones):

qa
    prompt ``"Question: {input}\\nAnswer:"``, completion ``" {output}"`` (note the space).
instruction
    Alpaca style: prompt ``"### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n
    ### Response:\\n"`` (the ``### Input`` block is left out when the input is empty),
    completion ``"{output}"``.
plain
    prompt ``""``, completion the text column (loss on every token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QA_PROMPT = "Question: {input}\nAnswer:"
QA_COMPLETION = " {output}"

INSTRUCTION_PROMPT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
INSTRUCTION_PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
INSTRUCTION_COMPLETION = "{output}"

PLAIN_PROMPT = ""
PLAIN_COMPLETION = "{text}"

TEMPLATES = ("qa", "instruction", "plain")

# template -> the fields it reads; and the fields that must be non-empty for a usable row
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "qa": ("input", "output"),
    "instruction": ("instruction", "input", "output"),
    "plain": ("text",),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "qa": ("input", "output"),
    "instruction": ("instruction", "output"),
    "plain": ("text",),
}


# template -> (start, end) of every prompt it renders (plain has no frame); queries are checked
# against it (datablame.data.queries), since a query that does not look like training ranks worse
PROMPT_FRAMES: dict[str, tuple[str, str]] = {
    "qa": ("Question: ", "\nAnswer:"),
    "instruction": ("### Instruction:\n", "### Response:\n"),
}
FRAME_TEXT: dict[str, str] = {
    "qa": 'prompt "Question: {input}\\nAnswer:", completion " {output}" (with the space)',
    "instruction": 'prompt "### Instruction:\\n{instruction}\\n\\n[### Input:\\n{input}\\n\\n]### Response:\\n", '
                   'completion "{output}"',
}


def in_frame(template: str, prompt: str) -> bool:
    """Whether `prompt` has the start and end of the template's prompts (trailing spaces allowed)."""
    if template not in PROMPT_FRAMES:
        return True
    start, end = PROMPT_FRAMES[template]
    return prompt.startswith(start) and prompt.rstrip(" ").endswith(end)


def render_qa(question: str, answer: str) -> tuple[str, str]:
    """The `qa` pair for a question and its answer."""
    return QA_PROMPT.format(input=question), QA_COMPLETION.format(output=answer)


def render(template: str, fields: Mapping[str, str]) -> tuple[str, str]:
    """Render template fields (see TEMPLATE_FIELDS) into (prompt, completion)."""
    if template == "qa":
        return render_qa(fields.get("input", ""), fields.get("output", ""))
    if template == "instruction":
        inp = fields.get("input", "")
        if inp.strip():
            prompt = INSTRUCTION_PROMPT.format(instruction=fields.get("instruction", ""), input=inp)
        else:
            prompt = INSTRUCTION_PROMPT_NO_INPUT.format(instruction=fields.get("instruction", ""))
        return prompt, INSTRUCTION_COMPLETION.format(output=fields.get("output", ""))
    if template == "plain":
        return PLAIN_PROMPT, PLAIN_COMPLETION.format(text=fields.get("text", ""))
    raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")


def as_text(value: Any) -> str:
    """A cell value as text: None (and NaN) -> "", numbers etc. -> str()."""
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    return value if isinstance(value, str) else str(value)
