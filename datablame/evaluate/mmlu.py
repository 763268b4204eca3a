"""MMLU-style multiple choice, scored as lm-evaluation-harness scores MMLU.

Prompt (k-shot, default 5; the examples are a subject's first k dev questions, or without
a dev set the subject's first k other questions):

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {shot question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}\\n\\n   (k times)
    {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

The answer is the letter whose continuation " A" .. " D" has the highest log-likelihood
under the model (sum over its tokens: the context and context+continuation are tokenized,
the continuation is what the joint encoding adds after the context's tokens, as
lm-evaluation-harness does). One difference: the tokenizer's special tokens (a bos) are added,
as datablame trains with them; lm-evaluation-harness adds none for most models by default.
Accuracy per subject and over all questions, each with a bootstrap CI over questions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from datablame.evaluate.mmlu_data import LETTERS, MCQuestion, load_hf, load_local, select
from datablame.evaluate.settings import BootstrapSettings, MMLUSettings
from datablame.evaluate.sources import EvalModel
from datablame.evaluate.stats import summarize

log = logging.getLogger("datablame")


def format_question(q: MCQuestion) -> str:
    lines = [q.question.strip(), *(f"{letter}. {c}" for letter, c in zip(LETTERS, q.choices, strict=True))]
    return "\n".join(lines) + "\nAnswer:"


def build_prompt(q: MCQuestion, shots: Sequence[MCQuestion]) -> str:
    """The k-shot context for `q` (without the answer continuation)."""
    head = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    examples = [f"{format_question(s)} {LETTERS[s.answer]}" for s in shots]
    return head + "\n\n".join([*examples, format_question(q)])


def _shots(q_index: int, questions: list[MCQuestion], dev: list[MCQuestion] | None, k: int) -> list[MCQuestion]:
    if dev is not None:
        return dev[:k]
    return [q for i, q in enumerate(questions) if i != q_index][:k]


def _encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits them; whitespace at the
    end of the context moves to the continuation."""
    n_space = len(context) - len(context.rstrip())
    if n_space:
        context, continuation = context[:-n_space], context[-n_space:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return whole[: len(ctx)], whole[len(ctx):]


def _max_len(model: Any) -> int | None:
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


@torch.no_grad()
def loglikelihoods(model: Any, tokenizer: Any, context: str, continuations: Sequence[str]) -> list[float]:
    """log P(continuation | context) for each continuation, in one right-padded batch."""
    pairs = [_encode_pair(tokenizer, context, c) for c in continuations]
    limit = _max_len(model)
    seqs, spans = [], []
    for ctx, cont in pairs:
        ids = ctx + cont
        if limit and len(ids) > limit:  # keep the end, as lm-evaluation-harness truncates
            ids = ids[len(ids) - limit:]
        seqs.append(ids)
        spans.append(len(cont))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id or 0
    device = next(model.parameters()).device
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    logp = torch.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
    out = []
    for b, (s, n) in enumerate(zip(seqs, spans, strict=True)):
        pos = torch.arange(len(s) - n, len(s), device=device)
        out.append(float(logp[b, pos - 1, input_ids[b, pos]].sum()))
    return out


def load_questions(settings: MMLUSettings) -> tuple[dict[str, list[MCQuestion]], dict[str, list[MCQuestion]] | None, str]:
    """(test questions by subject, dev questions by subject or None, where they came from)."""
    if settings.path:
        test, source = load_local(settings.path), settings.path
        dev = load_local(settings.dev_path) if settings.dev_path else None
    else:
        test, source = load_hf(settings.hf_dataset, "test"), settings.hf_dataset
        dev = load_hf(settings.hf_dataset, "dev") if settings.k_shot else None
    test = select(test, settings.subjects, source)
    if settings.limit:
        test = {s: qs[: settings.limit] for s, qs in test.items()}
    return test, dev, source


def score_model(em: EvalModel, test: dict[str, list[MCQuestion]], dev: dict[str, list[MCQuestion]] | None,
                k_shot: int, boot: BootstrapSettings) -> dict[str, Any]:
    """Per question the letters' log-likelihoods and the chosen letter; accuracy per subject."""
    per_question, subjects = [], {}
    continuations = [f" {letter}" for letter in LETTERS]
    with em.active() as model:
        for subject, questions in test.items():
            shots_from = None if dev is None else dev.get(subject, [])
            if dev is not None and len(shots_from) < k_shot:
                log.warning("MMLU subject %s has %d dev examples, fewer than k_shot=%d", subject, len(shots_from), k_shot)
            correct = []
            for i, q in enumerate(questions):
                prompt = build_prompt(q, _shots(i, questions, shots_from, k_shot))
                ll = loglikelihoods(model, em.tokenizer, prompt, continuations)
                pred = max(range(4), key=lambda j: ll[j])
                correct.append(float(pred == q.answer))
                per_question.append({"subject": subject, "index": i, "answer": LETTERS[q.answer],
                                     "predicted": LETTERS[pred], "loglikelihoods": dict(zip(LETTERS, ll, strict=True))})
            subjects[subject] = {"accuracy": summarize(correct, boot)}
    acc = [float(p["predicted"] == p["answer"]) for p in per_question]
    macro = sum(s["accuracy"]["mean"] for s in subjects.values()) / max(len(subjects), 1)
    return {"accuracy": summarize(acc, boot), "macro_accuracy": macro, "subjects": subjects,
            "per_question": per_question}


def mmlu_all(models: Sequence[EvalModel], questions: tuple[dict, dict | None, str], settings: MMLUSettings,
             boot: BootstrapSettings) -> dict[str, Any]:
    """Every model on the questions `load_questions` returned."""
    test, dev, source = questions
    return {
        "source": str(source), "k_shot": settings.k_shot, "subjects": {s: len(q) for s, q in test.items()},
        "few_shot_from": "dev" if dev is not None else "other questions of the subject",
        "models": {m.name: score_model(m, test, dev, settings.k_shot, boot) for m in models},
    }
