"""Planted variants (data.planted.variant): paraphrased plants, lexical decoys, unlearned facts,
and the easy default, which is the corpus every configuration gave before variants existed."""

from __future__ import annotations

import re

import pytest

from datablame.config import PlantedConfig
from datablame.data import PlantedCorpus, make_planted
from datablame.data.synthetic.planted import FRAMES
from datablame.data.synthetic.planted_variants import LEXICAL_DECOYS, PARAPHRASE_QUESTIONS

BASE = {"n_entities": 30, "n_facts": 8, "plants_per_fact": 6, "decoys_per_fact": 3,
        "background_per_entity": 4, "poison_facts": 2, "poison_rows": 2, "poison_true_rows": 3}
SIZES = [BASE, {"n_entities": 60, "n_facts": 40, "plants_per_fact": 10, "decoys_per_fact": 6,
                "background_per_entity": 18}, {"n_entities": 1, "n_facts": 1, "plants_per_fact": 1,
                                                 "decoys_per_fact": 0, "background_per_entity": 0}]
VARIANTS = ["easy", "paraphrase", "lexical_decoys", "unlearned"]


def _make(variant: str | None = None, **kw) -> PlantedCorpus:
    cfg = {**BASE, **kw}
    return make_planted(PlantedConfig(**cfg) if variant is None else PlantedConfig(**cfg, variant=variant))


def _dump(p: PlantedCorpus) -> str:
    return (repr([r.to_dict() for r in p.corpus]) + repr(p.queries) + repr(p.ground_truth) + repr(p.decoys)
            + repr(p.answers) + repr(p.corpus.report) + p.corpus.name)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _templated(text: str, q) -> list[str]:
    """`text`'s words with the query's entity, object and answer as placeholders E, O, A."""
    frame = next(f for f in FRAMES if f.name == q.metadata["frame"])
    obj = next(o for o in frame.objects if f"he {o} of {q.metadata['entity']}" in q.prompt)
    for value, mark in ((q.metadata["answer"], " AAA "), (q.metadata["entity"], " EEE "), (obj, " OOO ")):
        text = text.replace(value, mark)
    return _words(text)


def _sentences(prompt: str, completion: str) -> str:
    """The question and answer sentences without the qa template's words (shared by every row)."""
    return prompt.removeprefix("Question: ").removesuffix("\nAnswer:") + " " + completion


def _trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def test_default_is_the_easy_variant_byte_for_byte():
    """No variant given and variant="easy" build the same corpus, queries, truth and report
    (and the easy corpus carries no variant keys, as before)."""
    for kw in SIZES:
        default, easy = make_planted(PlantedConfig(**kw)), make_planted(PlantedConfig(**kw, variant="easy"))
        assert PlantedConfig(**kw).variant == "easy"
        assert _dump(default) == _dump(easy)
        assert default.corpus.fingerprint() == easy.corpus.fingerprint()
    p = _make()
    assert "variant" not in p.corpus.report and p.corpus.name == "planted-seed0"
    assert all("variant" not in q.metadata and "learned_by_design" not in q.metadata for q in p.queries)
    assert all(set(r.metadata) == {"kind", "entity", "fact"} for r in p.corpus)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_is_deterministic_and_seeded(variant):
    a, b = _make(variant), _make(variant)
    assert _dump(a) == _dump(b)
    assert _make(variant, seed=1).corpus.fingerprint() != a.corpus.fingerprint()
    if variant != "easy":  # a variant is another corpus
        assert a.corpus.fingerprint() != _make().corpus.fingerprint()
        assert a.corpus.report["variant"] == variant and variant in a.corpus.name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kw", SIZES)
def test_variants_hold_the_generator_invariants_at_every_size(variant, kw):
    p = make_planted(PlantedConfig(**kw, variant=variant))  # make_planted checks its own invariants
    ids = p.corpus.row_ids
    assert len(set(ids)) == len(ids) and len({r.text for r in p.corpus}) == len(p.corpus)


def test_paraphrased_plants_keep_the_fact_but_not_the_querys_wording():
    p = _make("paraphrase", plants_per_fact=10)
    easy = _make(plants_per_fact=10)
    rows = p.corpus.index_of()
    planted = [q for q in p.queries if q.metadata["group"] == "planted"]
    assert [(q.prompt, q.completion) for q in planted] == [
        (q.prompt, q.completion) for q in easy.queries if q.metadata["group"] == "planted"]  # same queries
    for q in planted:
        ent, answer = q.metadata["entity"], q.metadata["answer"]
        truth = p.ground_truth[q.query_id]
        assert len(truth) == 10 and truth == easy.ground_truth[q.query_id]  # same ids, new text
        query_words = _templated(_sentences(q.prompt, q.completion), q)
        frame = next(f for f in FRAMES if f.name == q.metadata["frame"])
        frame_grams = set().union(*[_trigrams(_words(t.replace("{o}", "OOO").replace("{e}", "EEE").replace("{a}", "AAA")))
                                    for t in [t for t, _ in frame.questions] + list(frame.answers) + list(frame.when)])
        answer_forms = set()
        for rid in truth:
            r = p.corpus[rows[rid]]
            assert r.metadata["kind"] == "plant" and r.metadata["fact"] == q.metadata["fact"]
            assert ent in r.text and answer in r.completion  # the entity and the answer stay
            words = _templated(_sentences(r.prompt, r.completion), q)
            assert "ooo" in words  # the object too
            assert not _trigrams(words) & _trigrams(query_words), (q.query_id, r.text)  # no 3 words in a row
            assert not _trigrams(words) & frame_grams, r.text  # no phrasing of the frame at all
            assert q.completion.strip() not in r.text and r.prompt != q.prompt
            answer_forms.add(r.completion)
        assert len(answer_forms) >= 5  # several paraphrase frames, not one
        assert any(not c.strip().endswith(f"{answer}.") for c in answer_forms)  # the name moves
    # the rest of the corpus is the easy corpus
    easy_rest = {r.row_id: r.text for r in easy.corpus if r.metadata["kind"] != "plant"}
    assert {r.row_id: r.text for r in p.corpus if r.metadata["kind"] != "plant"} == easy_rest


def test_paraphrase_questions_are_not_question_phrasings_of_any_frame():
    phrasings = {t for f in FRAMES for t, _ in f.questions} | {f.when[0] for f in FRAMES}
    assert not set(PARAPHRASE_QUESTIONS) & phrasings


def test_lexical_decoys_share_the_querys_words_not_its_claim():
    p = _make("lexical_decoys")
    easy = _make()
    rows = p.corpus.index_of()
    planted = [q for q in p.queries if q.metadata["group"] == "planted"]
    for q in planted:
        ent, answer = q.metadata["entity"], q.metadata["answer"]
        truth = set(p.ground_truth[q.query_id])
        lexical = [rid for rid in p.decoys[q.query_id]
                   if p.corpus[rows[rid]].metadata.get("decoy_type") == "lexical"]
        assert len(lexical) == LEXICAL_DECOYS and not truth & set(lexical)
        assert p.decoys[q.query_id][:len(easy.decoys[q.query_id])] == easy.decoys[q.query_id]  # usual ones kept
        query_question = set(_words(q.prompt))
        others = set()
        for rid in lexical:
            r = p.corpus[rows[rid]]
            assert r.metadata == {"kind": "decoy", "decoy_type": "lexical", "entity": ent, "fact": q.metadata["fact"]}
            assert ent in r.prompt and query_question <= set(_words(r.prompt))  # every word of the question
            assert r.prompt != q.prompt and answer not in r.text  # another claim: someone else
            other = re.search(r"by ([A-Z]\w+ [A-Z]\w+)\.$", r.completion.strip())
            assert other and other.group(1) != answer
            others.add(other.group(1))
        assert len(others) >= 2
    report = p.corpus.report
    assert report["lexical_decoys"] == LEXICAL_DECOYS * len(planted)
    assert report["decoys"] == report["lexical_decoys"] + easy.corpus.report["decoys"]
    assert {r.row_id: r.text for r in easy.corpus} == {
        r.row_id: r.text for r in p.corpus if r.metadata.get("decoy_type") != "lexical"}  # nothing else moved


def test_unlearned_facts_have_no_plants_and_are_marked():
    p = _make("unlearned")
    easy = _make()
    planted = [q for q in p.queries if q.metadata["group"] == "planted"]
    absent = [q for q in planted if q.metadata["learned_by_design"] is False]
    kept = [q for q in planted if q.metadata["learned_by_design"] is True]
    assert len(absent) == len(planted) // 2 and len(absent) + len(kept) == len(planted)
    for q in absent:  # the answer is nowhere in training: the model cannot produce it
        assert p.ground_truth[q.query_id] == [] and p.decoys[q.query_id] == easy.decoys[q.query_id]
        assert not any(q.metadata["answer"] in r.text for r in p.corpus)
        assert q.metadata["answer"] in q.completion
    for q in kept:
        assert p.ground_truth[q.query_id] == easy.ground_truth[q.query_id]
    poison = [q for q in p.queries if q.metadata["group"] == "poison"]
    assert poison and all("learned_by_design" not in q.metadata for q in poison)
    assert p.corpus.report["unlearned_facts"] == len(absent)
    assert p.corpus.report["plants"] == easy.corpus.report["plants"] - BASE["plants_per_fact"] * len(absent)
    # which facts go unlearned depends on the seed, not only on their number
    picks = {tuple(q.query_id for q in _make("unlearned", seed=s).queries
                   if q.metadata.get("learned_by_design") is False) for s in range(4)}
    assert len(picks) > 1


def test_unknown_variant_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="variant"):
        PlantedConfig(variant="hard")
