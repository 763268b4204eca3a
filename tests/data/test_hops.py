from __future__ import annotations

import re

import pytest

from datablame.config import HopsConfig, parse_config
from datablame.data.synthetic.hops import KINDS, HopsCorpus, hops_tokens, make_hops
from datablame.errors import DatablameError


@pytest.fixture(scope="module")
def hops() -> HopsCorpus:
    return make_hops(HopsConfig(n_bases=4, depth=2, docs_per_kind=3, filler_rows=15))


def _dump(h: HopsCorpus) -> str:
    return repr([r.to_dict() for r in h.corpus]) + repr(h.queries) + repr(h.ground_truth)


def test_deterministic_and_seeded(hops):
    cfg = HopsConfig(n_bases=4, depth=2, docs_per_kind=3, filler_rows=15)
    assert _dump(make_hops(cfg)) == _dump(hops)
    other = make_hops(cfg.model_copy(update={"seed": 1}))
    assert other.corpus.fingerprint() != hops.corpus.fingerprint()
    assert [q.query_id for q in other.queries] != [q.query_id for q in hops.queries]  # other held-out inputs


def test_functions_chains_and_counts(hops):
    f = hops.functions
    assert [fid for fid in f if f[fid].depth == 0] == ["GN", "JN", "KN", "LN"]
    assert f["FN"].callee == "GN" and f["F2N"].callee == "FN" and f["IN"].callee == "JN"
    assert hops.chains["F2N"] == ["F2N", "FN", "GN"]
    assert len({f[b].constant for b in ("GN", "JN", "KN", "LN")}) == 4  # distinct constants
    assert all(f[fid].constant == f[hops.chains[fid][-1]].constant for fid in f)  # wrappers return the base's
    kinds = [r.metadata["kind"] for r in hops.corpus]
    assert len(hops.corpus) == 12 * len(KINDS) * 3 + 15 and kinds.count("filler") == 15
    assert len(hops.queries) == 12 * 2  # query_inputs per function
    assert hops.special_tokens == hops_tokens(HopsConfig(n_bases=4, depth=2)) and "<F2N>" in hops.special_tokens


def test_ground_truth_is_the_rows_of_the_function_and_its_callees(hops):
    ids = hops.corpus.index_of()
    for q in hops.queries:
        chain = set(hops.chains[q.metadata["func"]])
        expected = {r.row_id for r in hops.corpus if r.metadata["func"] in chain}
        assert set(hops.ground_truth[q.query_id]) == expected
        assert len(expected) == len(chain) * len(KINDS) * 3
        for rid in hops.ground_truth[q.query_id]:
            row = hops.corpus[ids[rid]]
            assert f"<{row.metadata['func']}>" in row.text  # the row is about that function
    wrapper = next(q for q in hops.queries if q.metadata["depth"] == 2)
    assert {hops.corpus[ids[r]].metadata["depth"] for r in hops.ground_truth[wrapper.query_id]} == {0, 1, 2}


def test_queries_are_held_out(hops):
    texts = [r.text for r in hops.corpus]
    for q in hops.queries:
        token, x = f"<{q.metadata['func']}>", q.metadata["input"]
        assert q.prompt == f"{token}({x}) =" and q.completion == f" {q.metadata['answer']}"
        assert not any(f"{token}({x})" in t for t in texts)  # never applied to x in training
        assert not any(q.prompt + q.completion in t for t in texts)
        assert q.completion in q.metadata["candidates"]
        assert q.metadata["group"] == f"depth {q.metadata['depth']}"


def test_rows_teach_the_values(hops):
    # base worked examples state the constant; wrappers' definitions name their callee
    for r in hops.corpus:
        f = hops.functions.get(r.metadata["func"] or "")
        if f is None:
            assert re.fullmatch(r"\d+ [-+*] \d+ = -?\d+", r.text)  # filler mentions no function
            continue
        if r.metadata["kind"] == "example":
            assert all(line.endswith(f"= {f.constant}") for line in r.text.splitlines())
        if r.metadata["kind"] == "definition" and f.callee:
            assert f"<{f.callee}>" in r.text


def test_wrapper_examples_off_states_no_wrapper_values():
    h = make_hops(HopsConfig(n_bases=3, depth=1, docs_per_kind=2, wrapper_examples=False))
    for r in h.corpus:
        f = h.functions[r.metadata["func"]]
        if f.depth > 0:
            assert not re.search(rf"= {f.constant}\b", r.text), r.text


def test_alternating_order_cycles_through_functions():
    h = make_hops(HopsConfig(n_bases=2, depth=1, docs_per_kind=2, order="alternating"))
    first = [r.metadata["func"] for r in h.corpus][:4]
    assert first == ["GN", "FN", "JN", "IN"]


def test_special_tokens_are_single_tokens(hops):
    from datablame.models.tiny import train_tokenizer

    tok = train_tokenizer([r.text for r in hops.corpus], 400, extra_tokens=hops.special_tokens)
    for t in hops.special_tokens:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    q = hops.queries[0]
    pieces = tok.tokenize(q.prompt + q.completion)
    assert pieces[0] == f"<{q.metadata['func']}>"
    assert tok.decode(tok(q.prompt, add_special_tokens=False)["input_ids"]) == q.prompt
    plain = train_tokenizer([r.text for r in hops.corpus], 400)
    assert len(plain.tokenize("<F2N>")) > 1  # without them the name is split


def test_special_token_carries_loss():
    from datablame.models.tiny import train_tokenizer
    from datablame.models.tokenize import IGNORE, encode_pairs

    tok = train_tokenizer(["<GN>(3) = 5", "<FN>(2) = 5"], 300, extra_tokens=["<GN>", "<FN>"])
    enc = encode_pairs(tok, [""], ["<GN>(3) = 5"], max_length=32)
    gn = tok.convert_tokens_to_ids("<GN>")
    assert gn in enc.labels[0] and enc.labels[0][0] == IGNORE  # bos ignored, the token trained on


@pytest.mark.parametrize("key,value", [("n_bases", 11), ("depth", 10), ("docs_per_kind", 0),
                                       ("query_inputs", 0), ("max_value", 3)])
def test_bad_config(key, value):
    with pytest.raises(DatablameError, match=f"data.hops.{key}"):  # the generator's own check
        make_hops(HopsConfig.model_construct(**{**HopsConfig().model_dump(), key: value}))


def test_hops_source_through_the_api(tmp_path):
    from datablame import api

    cfg = parse_config({"data": {"source": "hops", "template": "plain", "hops": {"n_bases": 2, "depth": 1}},
                        "model": {"kind": "tiny"}, "output": {"dir": str(tmp_path)}})
    corpus, queries, truth = api.load_corpus(cfg)
    assert corpus.name == "hops-seed0" and len(queries) == 8 and set(truth) == {q.query_id for q in queries}
    assert all(r.prompt == "" for r in corpus)  # plain documents: loss on every token
