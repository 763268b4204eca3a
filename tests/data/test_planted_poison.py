"""The planted corpus at benchmark scale (>= 5,000 rows) and its poison variant."""

from __future__ import annotations

import pytest

from datablame.config import PlantedConfig
from datablame.data import make_planted
from datablame.errors import DatablameError

POISON = {"n_entities": 30, "n_facts": 6, "plants_per_fact": 3, "decoys_per_fact": 2,
          "background_per_entity": 4, "poison_facts": 4, "poison_rows": 3, "poison_true_rows": 8}


@pytest.fixture(scope="module")
def poisoned():
    return make_planted(PlantedConfig(**POISON))


def test_poison_rows_are_the_ground_truth_and_true_rows_the_decoys(poisoned):
    ids = poisoned.corpus.index_of()
    poison_q = [q for q in poisoned.queries if q.metadata["group"] == "poison"]
    assert len(poison_q) == 4 and len(poisoned.queries) == 10
    for q in poison_q:
        false, true = q.metadata["answer"], q.metadata["true_answer"]
        truth, decoys = poisoned.ground_truth[q.query_id], poisoned.decoys[q.query_id]
        assert len(truth) == 3 and len(decoys) == 8
        assert q.completion.endswith(f"{false}.") and q.prompt.startswith("Question: ")
        for r in poisoned.corpus:
            assert (false in r.text) == (r.row_id in truth)  # only the poison rows state it
            assert (true in r.text) == (r.row_id in decoys)
        for rid in truth:
            assert poisoned.corpus[ids[rid]].metadata["kind"] == "poison"
        for rid in decoys:  # the true rows ask the same questions about the same object
            row = poisoned.corpus[ids[rid]]
            assert row.metadata["kind"] == "true" and row.metadata["fact"] == q.metadata["fact"]
        prompts = {poisoned.corpus[ids[r]].prompt for r in truth}
        assert prompts <= {poisoned.corpus[ids[r]].prompt for r in decoys}
        assert q.prompt not in {r.prompt for r in poisoned.corpus}  # held-out phrasing
        cands = q.metadata["candidates"]
        assert cands[0] == q.completion and cands[1] == q.completion.replace(false, true)
        assert q.metadata["learned_max_rank"] == 2


def test_poison_entities_are_not_fact_entities(poisoned):
    facts = {q.metadata["entity"] for q in poisoned.queries if q.metadata["group"] == "planted"}
    poison = {q.metadata["entity"] for q in poisoned.queries if q.metadata["group"] == "poison"}
    assert not facts & poison and len(poison) == 4
    report = poisoned.corpus.report
    assert report["poison"] == 12 and report["poison_true"] == 32
    assert report["kept"] == 30 * 4 + 6 * 5 + 4 * 11 == len(poisoned.corpus)


def test_poison_leaves_the_rest_of_the_corpus_alone(poisoned):
    clean = make_planted(PlantedConfig(**{**POISON, "poison_facts": 0}))
    kept = [r for r in poisoned.corpus if r.metadata["kind"] not in ("poison", "true")]
    assert sorted(r.to_dict()["row_id"] for r in kept) == sorted(clean.corpus.row_ids)
    assert {r.row_id: r.text for r in kept} == {r.row_id: r.text for r in clean.corpus}
    planted = [q for q in poisoned.queries if q.metadata["group"] == "planted"]
    assert [(q.prompt, q.completion) for q in planted] == [(q.prompt, q.completion) for q in clean.queries]


def test_planted_candidates_name_every_answer(poisoned):
    answers = [q.metadata["answer"] for q in poisoned.queries if q.metadata["group"] == "planted"]
    for q in poisoned.queries[:6]:
        cands = q.metadata["candidates"]
        assert q.completion in cands and len(cands) == len(answers)
        assert all(sum(a in c for a in answers) == 1 for c in cands)


def test_benchmark_scale_corpus():
    cfg = PlantedConfig(n_entities=360, n_facts=64, plants_per_fact=4, decoys_per_fact=4,
                        background_per_entity=12, poison_facts=16, poison_rows=3, poison_true_rows=9)
    p = make_planted(cfg)  # checks its own invariants (answers only in their rows, ...)
    assert len(p.corpus) == 5024 and len(p.queries) == 80
    assert len({r.metadata["entity"] for r in p.corpus}) == 360
    assert p.corpus.fingerprint() == make_planted(cfg).corpus.fingerprint()
    # the first 200 entities are the original ones: a corpus that fit before is unchanged
    small = make_planted(PlantedConfig(n_entities=200, background_per_entity=1))
    big = make_planted(PlantedConfig(n_entities=201, background_per_entity=1))
    assert {r.metadata["entity"] for r in small.corpus} < {r.metadata["entity"] for r in big.corpus}


@pytest.mark.parametrize("kw", [{"poison_facts": 17}, {"poison_facts": 40, "n_entities": 40},
                                {"poison_facts": 1, "poison_rows": 0}, {"poison_facts": 1, "poison_true_rows": 11}])
def test_bad_poison_config(kw):
    with pytest.raises(DatablameError, match="data.planted.poison"):  # the generator's own check
        make_planted(PlantedConfig.model_construct(**{**PlantedConfig().model_dump(), **kw}))
