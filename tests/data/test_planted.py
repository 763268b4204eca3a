from __future__ import annotations

import re

import pytest

from datablame.config import PlantedConfig
from datablame.data import PlantedCorpus, make_planted
from datablame.errors import DatablameError


@pytest.fixture(scope="module")
def planted() -> PlantedCorpus:
    return make_planted(PlantedConfig())


def _dump(p: PlantedCorpus) -> str:
    return repr([r.to_dict() for r in p.corpus]) + repr(p.queries) + repr(p.ground_truth)


def test_deterministic_and_seeded(planted):
    again = make_planted(PlantedConfig())
    assert _dump(again) == _dump(planted)
    assert again.corpus.fingerprint() == planted.corpus.fingerprint()
    other = make_planted(PlantedConfig(seed=1))
    assert other.corpus.fingerprint() != planted.corpus.fingerprint()
    assert [q.completion for q in other.queries] != [q.completion for q in planted.queries]


def test_counts_match_config():
    cfg = PlantedConfig(n_entities=10, n_facts=3, plants_per_fact=5, decoys_per_fact=2,
                        background_per_entity=7, seed=3)
    p = make_planted(cfg)
    kinds = [r.metadata["kind"] for r in p.corpus]
    assert kinds.count("plant") == 15 and kinds.count("decoy") == 6
    assert kinds.count("background") == 70 and len(p.corpus) == 91
    assert len(p.queries) == 3 and set(p.ground_truth) == set(p.decoys) == {
        "fact-00", "fact-01", "fact-02"}
    assert all(len(v) == 5 for v in p.ground_truth.values())
    assert all(len(v) == 2 for v in p.decoys.values())
    assert len({r.metadata["entity"] for r in p.corpus}) == 10
    assert p.corpus.report["kept"] == 91 and p.corpus.report["plants"] == 15


def test_default_sizes(planted):
    assert len(planted.corpus) == 40 * 12 + 8 * 4 + 8 * 4
    assert [q.query_id for q in planted.queries] == [f"fact-{i:02d}" for i in range(8)]


def test_ids_and_metadata(planted):
    ids = planted.corpus.row_ids
    assert len(set(ids)) == len(ids)
    for r in planted.corpus:
        kind = r.metadata["kind"]
        assert set(r.metadata) == {"kind", "entity", "fact"}
        assert r.metadata["entity"] in r.text
        pattern = {"plant": r"planted-fact\d\d-\d+", "decoy": r"decoy-fact\d\d-\d+",
                   "background": r"bg-[a-z]+-\d+"}[kind]
        assert re.fullmatch(pattern, r.row_id), r.row_id
        assert r.prompt.startswith("Question: ") and r.prompt.endswith("\nAnswer:")
        assert r.completion.startswith(" ") and 8 <= len(r.text.split()) <= 40
    # rows are shuffled, not grouped by kind
    assert [r.metadata["kind"] for r in planted.corpus[:60]].count("background") < 60


def test_ground_truth_rows_hold_the_answer_and_only_they(planted):
    rows = planted.corpus.index_of()
    for q in planted.queries:
        answer = q.metadata["answer"]
        truth = set(planted.ground_truth[q.query_id])
        assert answer in q.completion
        for r in planted.corpus:
            assert (answer in r.text) == (r.row_id in truth), (q.query_id, r.row_id)
        plant_completions = {planted.corpus[rows[rid]].completion for rid in truth}
        assert q.completion in plant_completions  # the canonical answer is trained on
        for rid in truth:
            assert planted.corpus[rows[rid]].metadata["fact"] == q.metadata["fact"]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def test_decoys_share_entity_and_words_not_answer(planted):
    rows = planted.corpus.index_of()
    for q in planted.queries:
        ent, answer = q.metadata["entity"], q.metadata["answer"]
        plant_prompts = [_words(planted.corpus[rows[rid]].prompt)
                         for rid in planted.ground_truth[q.query_id]]
        for rid in planted.decoys[q.query_id]:
            r = planted.corpus[rows[rid]]
            assert r.metadata["kind"] == "decoy" and ent in r.prompt and answer not in r.text
            words = _words(r.prompt)
            overlap = max(len(words & p) / len(p) for p in plant_prompts)
            assert overlap >= 0.6, (q.query_id, r.prompt)


def test_query_prompts_are_held_out(planted):
    prompts = {r.prompt for r in planted.corpus}
    for q in planted.queries:
        assert q.prompt not in prompts
        assert q.prompt.startswith("Question: ") and q.prompt.endswith("\nAnswer:")
    assert len({q.metadata["entity"] for q in planted.queries}) == len(planted.queries)


@pytest.mark.parametrize("key,value", [("n_facts", 41), ("plants_per_fact", 0),
                                       ("decoys_per_fact", 99), ("n_entities", 0)])
def test_bad_config(key, value):
    with pytest.raises(DatablameError, match=f"data.planted.{key}"):  # the generator's own check
        make_planted(PlantedConfig.model_construct(**{**PlantedConfig().model_dump(), key: value}))


@pytest.mark.parametrize("kw", [
    {"n_entities": 60, "n_facts": 40, "plants_per_fact": 10, "decoys_per_fact": 6,
     "background_per_entity": 18},
    {"n_entities": 1, "n_facts": 1, "plants_per_fact": 1, "decoys_per_fact": 0,
     "background_per_entity": 0},
    {"n_facts": 0},
])
def test_extreme_configs_are_consistent(kw):
    p = make_planted(PlantedConfig(**kw))  # make_planted checks its own invariants
    cfg = PlantedConfig(**kw)
    assert len(p.corpus) == cfg.n_entities * cfg.background_per_entity + cfg.n_facts * (
        cfg.plants_per_fact + cfg.decoys_per_fact)
    assert len({q.metadata["answer"] for q in p.queries}) == cfg.n_facts
