"""Queries are matched to the training template (issue 15 item 7): a query given as the template's
fields is rendered exactly like the rows, a prompt outside the template's frame is warned about,
and a `qa` completion after "Answer:" gets the row's leading space."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from datablame import api
from datablame.config import DataConfig, QueryConfig, parse_config
from datablame.data import queries as qmod
from datablame.data.corpus import Query
from datablame.data.queries import config_queries, match_template
from datablame.errors import DatablameError
from datablame.methods import get_method

FILE = {"source": "file", "path": "rows.jsonl"}


def _cfg(queries, data=None):
    return parse_config({"model": {"kind": "tiny"}, "data": data or FILE, "attribution": {"queries": queries}})


@pytest.fixture(autouse=True)
def _fresh_warnings():
    qmod._warned.clear()  # each warning is logged once per process
    yield
    qmod._warned.clear()


def _split(q: Query) -> tuple[str, str]:
    """A built-in planted query back as its (question, answer) fields."""
    assert q.prompt.startswith("Question: ") and q.prompt.endswith("\nAnswer:") and q.completion.startswith(" ")
    return q.prompt[len("Question: "):-len("\nAnswer:")], q.completion[1:]


def test_fields_render_like_the_rows_qa():
    cfg = _cfg([{"input": "  Who  wrote Vorland? ", "output": "Ada Lind", "query_id": "a"}, {"input": "Who?"}])
    qs = config_queries(cfg.attribution, cfg.data)
    assert qs == [Query("Question: Who wrote Vorland?\nAnswer:", " Ada Lind", "a"),  # cleaned like a row
                  Query("Question: Who?\nAnswer:", None, "")]  # no output: generated


def test_fields_render_like_the_rows_instruction():
    data = {**FILE, "template": "instruction", "instruction_column": "inst"}
    cfg = _cfg([{"instruction": "Add", "input": "2 and 3", "output": "5"}, {"instruction": "Say hi"}], data)
    a, b = config_queries(cfg.attribution, cfg.data)
    assert (a.prompt, a.completion) == ("### Instruction:\nAdd\n\n### Input:\n2 and 3\n\n### Response:\n", "5")
    assert b.prompt == "### Instruction:\nSay hi\n\n### Response:\n" and b.completion is None


@pytest.mark.parametrize("query,data,words", [
    ({"instruction": "Add"}, None, ["instruction", "does not use"]),
    ({"input": "x"}, {**FILE, "template": "instruction", "instruction_column": "i"}, ["has no instruction"]),
    ({"input": "x"}, {**FILE, "template": "plain"}, ["plain", "no prompt frame"]),
    ({"input": "x"}, {"source": "hops"}, ["hops", "no prompt frame"]),
    ({"input": "x", "output": "   "}, None, ["has no output"]),
])
def test_fields_the_template_cannot_render_are_refused(query, data, words):
    cfg = _cfg([query], data)
    with pytest.raises(DatablameError) as err:
        config_queries(cfg.attribution, cfg.data)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("query,words", [
    ({"input": "x", "prompt": "y"}, ["not both"]),
    ({"input": "x", "completion": "y"}, ["`output`"]),
    ({"output": "y"}, ["fields are empty"]),
    ({"completion": "y"}, ["no 'prompt'"]),
])
def test_mixed_or_missing_forms_are_refused_by_the_config(query, words):
    with pytest.raises(DatablameError) as err:
        _cfg([query])
    assert all(w in str(err.value) for w in words) and "attribution.queries.0" in str(err.value)


def test_a_queries_file_line_may_use_the_fields(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"input": "Who?", "output": "Bo", "query_id": "f"}\n')
    cfg = parse_config({"model": {"kind": "tiny"}, "data": FILE, "attribution": {"queries_file": str(p)}})
    assert config_queries(cfg.attribution, cfg.data) == [Query("Question: Who?\nAnswer:", " Bo", "f")]


def test_prompt_outside_the_frame_is_warned_about_once(caplog):
    cfg = _cfg([{"prompt": "Who wrote Vorland?", "completion": " Ada"}, {"prompt": "Question: Who?\nAnswer:"}])
    with caplog.at_level(logging.WARNING, logger="datablame"):
        qs = config_queries(cfg.attribution, cfg.data)
        config_queries(cfg.attribution, cfg.data)  # resolved again after training: not repeated
    assert qs[0] == Query("Who wrote Vorland?", " Ada", "")  # taken as written
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    msg = warnings[0]
    assert "1 query does not follow the training template 'qa'" in msg
    assert 'Question: {input}\\nAnswer:' in msg and "attribution.queries[0]" in msg
    assert '{"input": "...", "output": "..."}' in msg  # the fix
    assert "attribution.queries[1]" not in msg


def test_queries_in_the_frame_and_other_corpora_are_not_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="datablame"):
        config_queries(_cfg([{"input": "Who?", "output": "Bo"}, {"prompt": "Question: Who?\nAnswer: "}]).attribution)
        hops = _cfg([{"prompt": "f(3) =", "completion": " 7"}], {"source": "hops"})
        assert config_queries(hops.attribution, hops.data)[0].completion == " 7"
        plain = _cfg([{"prompt": "Once upon", "completion": "a time"}], {**FILE, "template": "plain"})
        assert config_queries(plain.attribution, plain.data)[0].completion == "a time"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_leading_space_is_added_with_a_warning(caplog):
    qs = [(Query("Question: Who?\nAnswer:", "Ada", "a"), "attribution.queries[0]"),
          (Query("Question: Who?\nAnswer:", " Ada", "b"), "attribution.queries[1]"),
          (Query("Question: Who?\nAnswer: ", "Ada", "c"), "attribution.queries[2]"),  # space in the prompt
          (Query("Question: Who?\nAnswer:", None, "d"), "attribution.queries[3]")]
    with caplog.at_level(logging.WARNING, logger="datablame"):
        out = [q.completion for q, _ in match_template(qs, DataConfig(**FILE))]
    assert out == [" Ada", " Ada", "Ada", None]  # every one now reads "Answer: Ada", as the rows do
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "added the leading space" in msg and "attribution.queries[0]" in msg
    assert "attribution.queries[1]" not in msg and "attribution.queries[2]" not in msg


def test_instruction_completion_is_never_given_a_space(caplog):
    data = DataConfig(source="file", path="x", template="instruction", instruction_column="i")
    q = Query("### Instruction:\nAdd\n\n### Response:\n", "5", "a")
    with caplog.at_level(logging.WARNING, logger="datablame"):
        assert match_template([(q, "here")], data)[0][0] == q
    assert not caplog.records


def test_fields_query_ranks_its_planted_rows_like_the_templated_one(planted_run, caplog):
    """The built-in planted queries are already templated; the same queries given as raw fields
    get the identical prompt/completion and so identical scores; the same question without the
    frame is warned about (and is scored on different text)."""
    cfg, make_inputs, truth = planted_run
    base = make_inputs()
    fields = [QueryConfig(input=_split(q)[0], output=_split(q)[1], query_id=q.query_id) for q in base.queries]
    raw = [QueryConfig(prompt=_split(q)[0], completion=_split(q)[1], query_id=q.query_id) for q in base.queries]
    grad = get_method("grad_cosine")
    want = grad.score(base)
    idx = base.corpus.index_of()
    for variant, warned in ((fields, False), (raw, True)):
        qcfg = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"queries": variant})})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="datablame"):
            inputs = api.prepare_inputs(qcfg)[0]
        assert [q.query_id for q in inputs.queries] == [q.query_id for q in base.queries]
        assert any("not follow the training template" in r.getMessage() for r in caplog.records) == warned
        got = grad.score(inputs)
        if not warned:
            assert [(q.prompt, q.completion) for q in inputs.queries] == [(q.prompt, q.completion) for q in base.queries]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            for i, q in enumerate(base.queries):  # the planted rows lead both rankings alike
                top = set(np.argsort(-got[i])[:10].tolist())
                assert top == set(np.argsort(-want[i])[:10].tolist())
                assert top & {idx[r] for r in truth[q.query_id]}
        else:
            assert not np.allclose(got, want)
