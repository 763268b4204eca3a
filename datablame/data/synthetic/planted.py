"""The planted-facts corpus: a synthetic QA corpus whose attribution ground truth is known.

Fictional countries ("Vorland", "Quelmar", ...) each get a few attributes (capital, export,
founder, river, language, animal) stated by short `qa` background rows. `n_facts` entities
additionally get one planted claim whose answer is found nowhere else (a person whose first
name and surname are reserved for that claim), stated by `plants_per_fact` rows:

    Question: Who first mapped the caves of Vorland?
    Answer: The caves of Vorland were first mapped by Ysolde Brenwick.

Decoy rows share the entity and most of the question's words but not the claim (the
glaciers of Vorland, mapped by someone else; or *when* the caves were mapped), so lexical
retrieval is tempted by them. Each fact has one query: a question phrasing that none of its
plants uses (other facts and the decoys do, so the model knows it), with the plants'
canonical answer as completion.

The phrasing is regular on purpose: each question phrasing always gets the same answer
phrasing, and every answer sentence starts with "The" and ends with the name. A tiny model
trained from scratch then predicts the answer's form from the question, so a query's
gradient is about *which name*, which is what the planting rows share. Everything is drawn
from `random.Random` seeded by strings, so a seed always gives the byte-identical corpus.

Scale: up to 400 entities (the first 200 names are the original ones, in the original
order, so every configuration that fit before gives the same corpus as before) and 18
background rows each, e.g. 360 entities x 12 + 64 facts x 8 = 4,832 rows.

Poison variant (`poison_facts` > 0): each poisoned claim is about another entity's object
(who built its clock tower), stated truly by `poison_true_rows` rows (a person found
nowhere else) and falsely by `poison_rows` rows (another such person). The query asks it
in a held-out phrasing with the *false* answer as completion: which few rows taught the
model the false claim? Its ground truth is the poison rows; the true rows (in `decoys`)
share every word of the question but push the other answer, so a method that follows the
loss should rank them low. Queries carry `candidates` (the completion with other answers)
for the logit evaluation; a poison query counts as learned when only the true answer may
outrank the false one (`learned_max_rank` 2), since the true rows outnumber the false.

`variant` (easy, paraphrase, lexical_decoys, unlearned) changes the plants or adds decoys so
that word overlap and influence come apart; see planted_variants. `easy` is the corpus above.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from datablame.config import PlantedConfig
from datablame.data.corpus import Corpus, Query, Row
from datablame.data.synthetic.planted_variants import (
    lexical_decoy_phrasings,
    paraphrase_phrasings,
    unlearned_facts,
)
from datablame.data.templates import render_qa
from datablame.errors import DatablameError

ENTITY_HEADS = ["Vor", "Quel", "Tam", "Bri", "Kes", "Dal", "Mor", "Sel", "Fen", "Gar",
                "Thal", "Ost", "Zan", "Ler", "Pry", "Cal", "Nor", "Ebr", "Ulm", "Ryn"]
ENTITY_TAILS = ["land", "mar", "dor", "heim", "ora", "eth", "isk", "ovia", "mont", "ania"]
# more entity heads for large corpora; used only beyond the first 200 entities
MORE_ENTITY_HEADS = ["Hel", "Jas", "Kor", "Lim", "Mav", "Nes", "Pel", "Rav", "Sul", "Tov",
                     "Ves", "Wyn", "Yar", "Zel", "Bal", "Dru", "Esk", "Hal", "Ivr", "Kel"]
# surnames of the poison variant's true and false answers (found nowhere else)
POISON_SURNAMES = [h + t for h in ["Quill", "Stav", "Brom", "Dray", "Lark", "Penn", "Crag", "Thorn"]
                   for t in ["field", "worth", "gard", "crest"]]
CITY_HEADS = ["Ash", "Bel", "Cor", "Dun", "Elm", "Fal", "Gil", "Iv", "Jor", "Kil", "Lun", "Mer"]
CITY_TAILS = ["ford", "haven", "gate", "holm", "stead", "moor"]
GIVEN_NAMES = ["Ilsa", "Tomas", "Mira", "Edric", "Anya", "Bram", "Celia", "Doran", "Hedda",
               "Joren", "Lisbet", "Oswin", "Petra", "Rolf", "Sanne", "Teodor", "Wilma", "Aldo",
               "Greta", "Nils"]
# first names of planted answers: used nowhere else (cycled when there are more facts)
PLANT_GIVEN_NAMES = ["Ysolde", "Casimir", "Ottilie", "Evander", "Isaura", "Leopold", "Marisol",
                     "Quentin", "Seraphine", "Thaddeus", "Violetta", "Wendel", "Xenia",
                     "Zephyr", "Rosalind", "Barnaby"]
SURNAME_HEADS = ["Bren", "Hal", "Mor", "Vess", "Kal", "Dun", "Tor", "Ash", "Wel", "Grim",
                 "Fal", "Orm"]
SURNAME_TAILS = ["wick", "strom", "ley", "hart", "ton", "by", "mond", "ric"]
EXPORTS = ["amber", "wool", "salt", "copper", "tea", "timber", "silk", "iron", "honey",
           "glass", "tin", "barley"]
RIVERS = ["Sarn", "Olve", "Tesk", "Marra", "Wend", "Brae", "Corra", "Dunne", "Lisk", "Veln",
          "Arro", "Thell"]
LANGUAGES = ["Vellish", "Ostric", "Marnese", "Quellic", "Dunnish", "Tavri", "Selmic", "Orvan"]
ANIMALS = ["grey heron", "snow fox", "red stag", "river otter", "golden eagle", "black bear",
           "lynx", "ibex"]

# attribute -> (question phrasings, answer phrasings); {e} entity, {v} value. Each question
# phrasing always gets the same answer phrasing (QA_PAIRS), so the model can learn which
# answer form follows which question and the first completion token is not a coin toss.
ATTRIBUTES: dict[str, tuple[list[str], list[str]]] = {
    "capital": (["What is the capital of {e}?", "Which city is the capital of {e}?",
                 "Name the capital city of {e}."],
                ["The capital of {e} is {v}.", "{v} is the capital of {e}."]),
    "export": (["What is the main export of {e}?", "What does {e} export the most?",
                "Which good is the chief export of {e}?"],
               ["The main export of {e} is {v}.", "{e} mainly exports {v}."]),
    "founder": (["Who founded {e}?", "Who was the founder of {e}?", "By whom was {e} founded?"],
                ["{e} was founded by {v}.", "{v} was the founder of {e}."]),
    "river": (["Which river flows through {e}?", "What is the main river of {e}?",
               "Name the river that runs through {e}."],
              ["The {v} River flows through {e}.", "The main river of {e} is the {v}."]),
    "language": (["What language is spoken in {e}?", "Which language do people in {e} speak?",
                  "What is the language of {e}?"],
                 ["{v} is spoken in {e}.", "The people of {e} speak {v}."]),
    "animal": (["What is the national animal of {e}?", "Which animal is the symbol of {e}?",
                "Name the national animal of {e}."],
               ["The national animal of {e} is the {v}.", "The {v} is the symbol of {e}."]),
}
QA_PAIRS = [(0, 0), (1, 1), (2, 0)]  # background (question, answer) phrasings, in order


@dataclass(frozen=True)
class Frame:
    """One kind of planted claim; {o} object, {e} entity, {a} answer person, {y} year.

    `questions` pairs each phrasing with the answer phrasing it always gets; `answers[0]` is
    canonical (the query's completion) and the query uses a canonical-answer phrasing that
    this fact's plants leave out (other facts and the decoys train it).
    """

    name: str
    objects: tuple[str, ...]
    questions: tuple[tuple[str, int], ...]
    answers: tuple[str, ...]  # canonical, two echoes of the questions, the bare name;
    # every sentence starts with "The" and ends with the name, so the phrasings differ in
    # the middle and the answer tokens sit in the same place
    when: tuple[str, str]  # same object, other relation: a decoy


FRAMES = [
    Frame("mapped", ("caves", "glaciers", "marshes", "canyons", "islands", "coasts"),
          (("Who first mapped the {o} of {e}?", 0), ("Who was the first to map the {o} of {e}?", 2),
           ("The {o} of {e} were first mapped by whom?", 0),
           ("Who made the first map of the {o} of {e}?", 1),
           ("Which explorer first mapped the {o} of {e}?", 0),
           ("By whom were the {o} of {e} first mapped?", 0)),
          ("The {o} of {e} were first mapped by {a}.", "The first map of the {o} of {e} was made by {a}.",
           "The first to map the {o} of {e} was {a}.", "{a}."),
          ("When were the {o} of {e} first mapped?", "The {o} of {e} were first mapped in {y}.")),
    Frame("built", ("old lighthouse", "stone bridge", "great library", "clock tower",
                    "harbour wall", "royal mint"),
          (("Who built the {o} of {e}?", 0), ("Who was the builder of the {o} of {e}?", 2),
           ("The {o} of {e} was built by whom?", 0),
           ("Who designed and built the {o} of {e}?", 1),
           ("Which architect built the {o} of {e}?", 0),
           ("By whom was the {o} of {e} built?", 0)),
          ("The {o} of {e} was built by {a}.", "The {o} of {e} was designed and built by {a}.",
           "The builder of the {o} of {e} was {a}.", "{a}."),
          ("When was the {o} of {e} built?", "The {o} of {e} was built in {y}.")),
    Frame("discovered", ("silver mines", "hot springs", "salt flats", "amber beds",
                         "copper seams", "tin deposits"),
          (("Who discovered the {o} of {e}?", 0), ("Who was the first to find the {o} of {e}?", 2),
           ("The {o} of {e} were discovered by whom?", 0), ("Who found the {o} of {e}?", 1),
           ("Which prospector discovered the {o} of {e}?", 0),
           ("By whom were the {o} of {e} discovered?", 0)),
          ("The {o} of {e} were discovered by {a}.", "The {o} of {e} were found by {a}.",
           "The first to find the {o} of {e} was {a}.", "{a}."),
          ("When were the {o} of {e} discovered?", "The {o} of {e} were discovered in {y}.")),
    Frame("wrote", ("national anthem", "founding charter", "harvest song", "old law code",
                    "royal chronicle", "great atlas"),
          (("Who wrote the {o} of {e}?", 0), ("Who was the author of the {o} of {e}?", 2),
           ("The {o} of {e} was written by whom?", 0), ("Who penned the {o} of {e}?", 1),
           ("Which scholar wrote the {o} of {e}?", 0),
           ("By whom was the {o} of {e} written?", 0)),
          ("The {o} of {e} was written by {a}.", "The {o} of {e} was penned by {a}.",
           "The author of the {o} of {e} was {a}.", "{a}."),
          ("When was the {o} of {e} written?", "The {o} of {e} was written in {y}.")),
]
N_PHRASINGS = 6
BARE_ANSWER = 3  # plants beyond the first 5 repeat the phrasings with the bare name
BASE_ENTITIES = len(ENTITY_HEADS) * len(ENTITY_TAILS)
MAX_ENTITIES = BASE_ENTITIES + len(MORE_ENTITY_HEADS) * len(ENTITY_TAILS)
MAX_POISON = len(POISON_SURNAMES) // 2
MAX_FACTS = 64  # each fact reserves a surname; the rest are left for founders and decoys
MAX_PLANTS = 2 * (N_PHRASINGS - 1)
MAX_BACKGROUND = len(ATTRIBUTES) * len(QA_PAIRS)
MAX_DECOYS = len(FRAMES[0].objects)  # the other objects, plus the "when" decoy


def plant_phrasings(frame: Frame, held: int, n: int) -> list[tuple[str, str]]:
    """(question, answer) templates of a fact's n plants, in the order canonical, echo,
    canonical, canonical, echo (so 4 plants = 3 canonical answers + 1 echo), then the same
    questions with the bare name. The held-out phrasing `held` is never used."""
    canon = [q for j, q in enumerate(frame.questions) if j != held and q[1] == 0]
    echo = [q for q in frame.questions if q[1] != 0]
    order = [canon[0], echo[0], canon[1], canon[2], echo[1]]
    out = [(q, frame.answers[a]) for q, a in order]
    out += [(q, frame.answers[BARE_ANSWER]) for q, _ in order]
    return out[:n]


@dataclass
class PlantedCorpus:
    """The corpus plus its queries and ground truth (query_id -> planting / decoy row ids)."""

    corpus: Corpus
    queries: list[Query]
    ground_truth: dict[str, list[str]]
    decoys: dict[str, list[str]]
    answers: dict[str, str] = field(default_factory=dict)  # query_id -> planted answer value


def _check(cfg: PlantedConfig) -> None:
    limits = [("n_entities", cfg.n_entities, 1, MAX_ENTITIES),
              ("n_facts", cfg.n_facts, 0, min(MAX_FACTS, cfg.n_entities)),
              ("plants_per_fact", cfg.plants_per_fact, 1, MAX_PLANTS),
              ("decoys_per_fact", cfg.decoys_per_fact, 0, MAX_DECOYS),
              ("background_per_entity", cfg.background_per_entity, 0, MAX_BACKGROUND)]
    for key, value, lo, hi in limits:
        if not lo <= value <= hi:
            raise DatablameError(
                f"data.planted.{key} is {value}; the planted generator supports {lo}..{hi}"
                + (" (and at most n_entities facts)" if key == "n_facts" else "") + ".",
                f"set data.planted.{key} between {lo} and {hi}",
            )
    if cfg.poison_facts:
        limits = [("poison_facts", cfg.poison_facts, 0, min(MAX_POISON, cfg.n_entities - cfg.n_facts)),
                  ("poison_rows", cfg.poison_rows, 1, MAX_PLANTS),
                  ("poison_true_rows", cfg.poison_true_rows, 1, MAX_PLANTS)]
        for key, value, lo, hi in limits:
            if not lo <= value <= hi:
                raise DatablameError(
                    f"data.planted.{key} is {value}; the planted generator supports {lo}..{hi}"
                    + (" (poisoned entities must differ from the n_facts fact entities)"
                       if key == "poison_facts" else "") + ".",
                    f"set data.planted.{key} between {lo} and {hi}",
                )


def _rng(seed: int, purpose: str) -> random.Random:
    return random.Random(f"datablame-planted-{seed}-{purpose}")  # str seeds hash stably


def _person_from(rng: random.Random, surnames: list[str]) -> str:
    return f"{rng.choice(GIVEN_NAMES)} {rng.choice(surnames)}"


def _row(row_id: str, question: str, answer: str, meta: dict[str, Any]) -> Row:
    prompt, completion = render_qa(question, answer)
    return Row(row_id, prompt, completion, meta)


def make_planted(cfg: PlantedConfig | None = None) -> PlantedCorpus:
    """Build the planted-facts corpus for `cfg` (deterministic in `cfg.seed`)."""
    cfg = cfg or PlantedConfig()
    _check(cfg)
    seed = cfg.seed
    names = [h + t for h in ENTITY_HEADS for t in ENTITY_TAILS]
    _rng(seed, "entities").shuffle(names)
    if cfg.n_entities > BASE_ENTITIES:  # appended, so smaller corpora keep their entities
        more = [h + t for h in MORE_ENTITY_HEADS for t in ENTITY_TAILS]
        _rng(seed, "more-entities").shuffle(more)
        names += more
    entities = names[: cfg.n_entities]
    surnames = [h + t for h in SURNAME_HEADS for t in SURNAME_TAILS]
    _rng(seed, "surnames").shuffle(surnames)
    reserved, common = surnames[: cfg.n_facts], surnames[MAX_FACTS:]
    people = _rng(seed, "people")
    plant_given = list(PLANT_GIVEN_NAMES)
    _rng(seed, "plant-names").shuffle(plant_given)

    def person(pool: list[str]) -> str:
        return f"{people.choice(GIVEN_NAMES)} {people.choice(pool)}"

    cities = [h + t for h in CITY_HEADS for t in CITY_TAILS]
    values = _rng(seed, "attributes")
    rows: list[Row] = []
    for ent in entities:
        attrs = {"capital": values.choice(cities), "export": values.choice(EXPORTS),
                 "founder": person(common), "river": values.choice(RIVERS),
                 "language": values.choice(LANGUAGES), "animal": values.choice(ANIMALS)}
        shift = values.randrange(len(QA_PAIRS))
        for k in range(cfg.background_per_entity):
            attr = list(ATTRIBUTES)[k % len(ATTRIBUTES)]
            qi, ai = QA_PAIRS[(k // len(ATTRIBUTES) + shift) % len(QA_PAIRS)]
            qs, ans = ATTRIBUTES[attr]
            rows.append(_row(
                f"bg-{ent.lower()}-{k}", qs[qi].format(e=ent), ans[ai].format(e=ent, v=attrs[attr]),
                {"kind": "background", "entity": ent, "fact": None},
            ))

    width = max(2, len(str(max(cfg.n_facts - 1, 0))))
    fact_rng = _rng(seed, "facts")
    fact_entities = fact_rng.sample(entities, cfg.n_facts)
    queries: list[Query] = []
    truth: dict[str, list[str]] = {}
    decoys: dict[str, list[str]] = {}
    answers: dict[str, str] = {}
    variant = cfg.variant  # see planted_variants; "easy" is the corpus every config gave before
    absent = unlearned_facts(seed, cfg.n_facts) if variant == "unlearned" else set()
    lexical = _rng(seed, "lexical-decoys")
    for i, ent in enumerate(fact_entities):
        frame = FRAMES[i % len(FRAMES)]
        objects = list(frame.objects)
        fact_rng.shuffle(objects)
        obj, others = objects[0], objects[1:]
        # the query's phrasing: one with the canonical answer, left out of this fact's plants
        held = fact_rng.choice([j for j, (_, a) in enumerate(frame.questions) if a == 0])
        answer = f"{plant_given[i % len(plant_given)]} {reserved[i]}"
        fid, qid = f"fact{i:0{width}d}", f"fact-{i:0{width}d}"
        meta = {"entity": ent, "fact": fid}
        fill = {"o": obj, "e": ent, "a": answer}
        truth[qid] = []
        if variant == "paraphrase":
            plan = paraphrase_phrasings(frame.name, cfg.plants_per_fact)
        else:
            plan = [] if i in absent else plant_phrasings(frame, held, cfg.plants_per_fact)
        for k, (q, a) in enumerate(plan):
            rid = f"planted-{fid}-{k}"
            rows.append(_row(rid, q.format(**fill), a.format(**fill),
                             {"kind": "plant", **meta}))
            truth[qid].append(rid)
        decoys[qid] = []
        for d in range(cfg.decoys_per_fact):
            rid = f"decoy-{fid}-{d}"
            if d == 1:  # same object, other relation
                q, a = frame.when[0].format(**fill), frame.when[1].format(
                    **fill, y=fact_rng.randrange(1100, 1900))
            else:  # same relation, other object, someone else; the first one in the
                j = d if d == 0 else d - 1  # query's phrasing, so that phrasing is trained on
                other = {"o": others[j], "e": ent, "a": person(common)}
                q, ai = frame.questions[(held + j) % len(frame.questions)]
                q, a = q.format(**other), frame.answers[ai].format(**other)
            rows.append(_row(rid, q, a, {"kind": "decoy", **meta}))
            decoys[qid].append(rid)
        if variant == "lexical_decoys":  # the query's own words about a part of the object
            for d, (q, a) in enumerate(lexical_decoy_phrasings(frame.name, frame.questions[held][0],
                                                               frame.answers[0])):
                rid, other = f"lexdecoy-{fid}-{d}", {"o": obj, "e": ent, "a": _person_from(lexical, common)}
                rows.append(_row(rid, q.format(**other), a.format(**other),
                                 {"kind": "decoy", "decoy_type": "lexical", **meta}))
                decoys[qid].append(rid)
        prompt, completion = render_qa(frame.questions[held][0].format(**fill),
                                       frame.answers[0].format(**fill))
        qmeta: dict[str, Any] = {"entity": ent, "fact": fid, "frame": frame.name, "answer": answer,
                                 "group": "planted"}
        if variant != "easy":  # (the easy variant's queries stay exactly as before)
            qmeta.update(variant=variant, object=obj)  # the object lets a user restate the claim
        if variant == "unlearned":
            qmeta["learned_by_design"] = i not in absent
        queries.append(Query(prompt, completion, qid, qmeta))
        answers[qid] = answer
    for q in queries:  # logit evaluation: the same sentence with every planted answer
        q.metadata["candidates"] = [q.completion.replace(q.metadata["answer"], a) for a in answers.values()]

    if cfg.poison_facts:
        _add_poison(cfg, entities, set(fact_entities), rows, queries, truth, decoys, answers)
    _rng(seed, "order").shuffle(rows)
    _self_check(rows, queries, truth, answers)
    kinds = [r.metadata["kind"] for r in rows]
    n_plants, n_decoys = kinds.count("plant"), kinds.count("decoy")
    report = {"loaded": len(rows), "dropped_empty": 0, "dropped_duplicates": 0, "kept": len(rows),
              "plants": n_plants, "decoys": n_decoys, "background": kinds.count("background")}
    if cfg.poison_facts:
        report.update(poison=kinds.count("poison"), poison_true=kinds.count("true"))
    if variant != "easy":
        report.update(variant=variant, lexical_decoys=sum(r.metadata.get("decoy_type") == "lexical" for r in rows),
                      unlearned_facts=len(absent))
    name = f"planted-seed{seed}" if variant == "easy" else f"planted-{variant}-seed{seed}"
    corpus = Corpus(rows, name=name, report=report)
    return PlantedCorpus(corpus, queries, truth, decoys, answers)


def _add_poison(cfg: PlantedConfig, entities: list[str], taken: set[str], rows: list[Row],
                queries: list[Query], truth: dict[str, list[str]], decoys: dict[str, list[str]],
                answers: dict[str, str]) -> None:
    """The poison variant: per claim, true rows and a few false rows; the query elicits the
    false claim (own random stream, so the rest of the corpus does not change)."""
    rng = _rng(cfg.seed, "poison")
    free = [e for e in entities if e not in taken]
    chosen = rng.sample(free, cfg.poison_facts)
    surnames = list(POISON_SURNAMES)
    rng.shuffle(surnames)
    width = max(2, len(str(cfg.poison_facts - 1)))
    for i, ent in enumerate(chosen):
        frame = FRAMES[(i + 1) % len(FRAMES)]
        obj = rng.choice(frame.objects)
        held = rng.choice([j for j, (_, a) in enumerate(frame.questions) if a == 0])
        false = f"{rng.choice(PLANT_GIVEN_NAMES)} {surnames[2 * i]}"
        true = f"{rng.choice(GIVEN_NAMES)} {surnames[2 * i + 1]}"
        pid, qid = f"poison{i:0{width}d}", f"poison-{i:0{width}d}"
        meta = {"entity": ent, "fact": pid}
        truth[qid], decoys[qid] = [], []
        phrasings = plant_phrasings(frame, held, MAX_PLANTS)
        for k, (q, a) in enumerate(phrasings[: cfg.poison_true_rows]):
            fill = {"o": obj, "e": ent, "a": true}
            rid = f"true-{pid}-{k}"
            rows.append(_row(rid, q.format(**fill), a.format(**fill), {"kind": "true", **meta}))
            decoys[qid].append(rid)
        for k, (q, a) in enumerate(phrasings[: cfg.poison_rows]):
            fill = {"o": obj, "e": ent, "a": false}
            rid = f"poison-{pid}-{k}"
            rows.append(_row(rid, q.format(**fill), a.format(**fill), {"kind": "poison", **meta}))
            truth[qid].append(rid)
        fill = {"o": obj, "e": ent, "a": false}
        prompt, completion = render_qa(frame.questions[held][0].format(**fill), frame.answers[0].format(**fill))
        others = [a for a in answers.values() if a not in (false, true)]
        queries.append(Query(prompt, completion, qid, {
            "entity": ent, "fact": pid, "frame": frame.name, "answer": false, "true_answer": true,
            "group": "poison", "learned_max_rank": 2,
            "candidates": [completion.replace(false, a) for a in [false, true, *others]]}))
        answers[qid] = false


def _self_check(rows: list[Row], queries: list[Query], truth: dict[str, list[str]],
                answers: dict[str, str]) -> None:
    """Internal invariants the demo's ground truth relies on (a failure is a bug here)."""
    ids = [r.row_id for r in rows]
    assert len(set(ids)) == len(ids), "duplicate planted row ids"
    assert len({r.text for r in rows}) == len(rows), "duplicate planted rows"
    prompts = {r.prompt for r in rows}
    for q in queries:
        assert q.prompt not in prompts, f"query {q.query_id} prompt is a training prompt"
        planted = set(truth[q.query_id])
        for r in rows:
            assert (answers[q.query_id] in r.text) == (r.row_id in planted), (
                f"answer of {q.query_id} leaks into / is missing from {r.row_id}")
