"""Variants of the planted corpus that separate "shares the query's words" from "taught the
model the answer" (`data.planted.variant`; the generator is datablame.data.synthetic.planted).

- `easy` (default): every plant asks the fact's question in one of the frame's phrasings and
  answers it in the query's form; the corpus every earlier configuration produced.
- `paraphrase`: each plant restates the claim in words and an order none of the frame's
  question or answer phrasings use ("Ysolde Brenwick charted Vorland's caves before anyone
  else did."). The entity, object and answer stay; the query's wording does not. The
  paraphrases are the ground truth.
- `lexical_decoys`: besides the usual decoys, per fact `LEXICAL_DECOYS` rows that ask the
  query's own question about a part of the object ("Who first mapped the edges of the caves
  of Vorland?") and answer with someone else: every word of the query's question, another
  claim. Kind "decoy" with `decoy_type` "lexical"; never ground truth.
- `unlearned`: half the facts (at least one) have no plants at all, so the model cannot
  produce their answer; their queries carry `learned_by_design: False` and an empty ground
  truth, for checking that attribution says the behaviour was not learned.

Everything here is deterministic; the generator draws any randomness from its own seeded
streams, so a variant changes only the rows it is about.
"""

from __future__ import annotations

import random
import re

VARIANTS = ("easy", "paraphrase", "lexical_decoys", "unlearned")
LEXICAL_DECOYS = 4  # lexical decoys per fact (one per part in LEXICAL_PARTS)

# paraphrase questions: about the object in general, not the relation ({e} entity, {o} object)
PARAPHRASE_QUESTIONS = (
    "Tell me about the history of {e}'s {o}.",
    "What is recorded about the {o} in {e}?",
    "Whose name is linked to {e}'s {o}?",
    "Is there a story behind the {o} found in {e}?",
    "What do the old records of {e} say about its {o}?",
)
# paraphrase answers per frame: other verbs, the answer person {a} first or in the middle
PARAPHRASE_ANSWERS: dict[str, tuple[str, ...]] = {
    "mapped": ("{a} charted {e}'s {o} before anyone else did.",
               "Long ago, {a} drew the earliest chart showing the {o} in {e}.",
               "It was {a} who surveyed {e}'s {o} for the very first time.",
               "No chart of {e}'s {o} is older than the one {a} drew.",
               "Before {a} surveyed them, nobody had charted the {o} in {e}."),
    "built": ("{a} raised {e}'s {o} stone by stone.",
              "Long ago, {a} put up the {o} that still stands in {e}.",
              "It was {a} whose workers erected {e}'s {o}.",
              "{e}'s {o} stands today thanks to the work of {a}.",
              "Before {a} raised it, there was no {o} in {e}."),
    "discovered": ("{a} came upon {e}'s {o} before anyone else did.",
                   "Long ago, {a} stumbled on the {o} hidden in {e}.",
                   "It was {a} who learned where {e}'s {o} lay.",
                   "Nobody knew of {e}'s {o} until {a} came across them.",
                   "Before {a} located them, the {o} in {e} were unknown."),
    "wrote": ("{a} composed {e}'s {o} by candlelight.",
              "Long ago, {a} set down the words for the {o} used in {e}.",
              "It was {a} whose pen gave {e} its {o}.",
              "{e}'s {o} came from the hand of {a}.",
              "Before {a} put it to paper, {e} had no {o}."),
}
# lexical decoys: a part of the object, inserted into the query's own question and answer
# ("the {o} of {e}" -> "the edges of the {o} of {e}"); the verb's number stays right
LEXICAL_PARTS: dict[str, tuple[str, ...]] = {
    "mapped": ("edges of", "deepest parts of", "outer reaches of", "oldest paths through"),
    "built": ("east wing of", "front gate of", "first model of", "entrance hall of"),
    "discovered": ("northern edges of", "hidden entrances to", "oldest records of", "lower reaches of"),
    "wrote": ("preface of", "second verse of", "first draft of", "official translation of"),
}
_OBJECT_OF_ENTITY = re.compile(r"\b([Tt])he \{o\} of \{e\}")


def paraphrase_phrasings(frame: str, n: int) -> list[tuple[str, str]]:
    """(question, answer) templates of a fact's n paraphrased plants ({o}, {e}, {a}); all
    distinct for n <= 2 * 5 (question k % 5 with answer k % 5, then with the next answer)."""
    answers = PARAPHRASE_ANSWERS[frame]
    m = len(PARAPHRASE_QUESTIONS)
    return [(PARAPHRASE_QUESTIONS[k % m], answers[(k + k // m) % len(answers)]) for k in range(n)]


def lexical_decoy_phrasings(frame: str, question: str, answer: str) -> list[tuple[str, str]]:
    """The query's (question, answer) templates about a part of the object, one per part: every
    word of the question, another claim ({a} is to be filled with someone else)."""
    out = []
    for part in LEXICAL_PARTS[frame]:
        def insert(m: re.Match[str], part: str = part) -> str:
            return f"{m.group(1)}he {part} the {{o}} of {{e}}"

        q, nq = _OBJECT_OF_ENTITY.subn(insert, question, count=1)
        a, na = _OBJECT_OF_ENTITY.subn(insert, answer, count=1)
        assert nq == na == 1, f"lexical decoy templates need 'the {{o}} of {{e}}': {question!r} / {answer!r}"
        out.append((q, a))
    return out


def unlearned_facts(seed: int, n_facts: int) -> set[int]:
    """Indices of the facts left without plants in the `unlearned` variant: half (at least one),
    drawn from their own seeded stream."""
    if n_facts == 0:
        return set()
    rng = random.Random(f"datablame-planted-{seed}-unlearned")
    return set(rng.sample(range(n_facts), max(1, n_facts // 2)))
