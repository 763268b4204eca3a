"""Missing, empty and malformed queries are refused before any model is loaded, naming the
file and line; an earlier good result is left byte-identical."""

from __future__ import annotations

import json

import pytest
import yaml
from file_run import cli, raw_config, write_rows
from pipeline_config import small_config

from datablame import api
from datablame.config import parse_config
from datablame.data.corpus import Query
from datablame.data.queries import assign_ids, config_queries
from datablame.errors import DatablameError

GOOD = {"prompt": "What is the capital of Country2?", "completion": " The capital of Country2 is Oslo.",
        "query_id": "q2"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained file-based run with a good results.json: (tmp, raw config, outputs to keep)."""
    tmp = tmp_path_factory.mktemp("queries")
    data = write_rows(tmp / "rows.jsonl")
    raw = raw_config(tmp / "run", data)
    cfg_path = tmp / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = cli("run", "--config", str(cfg_path))
    assert res.exit_code == 0, res.stderr
    att = tmp / "run" / "attribution"
    return tmp, raw, [att / "results.json", att / "scores.npz"]


def _attribute_with(tmp, raw, attribution: dict):
    over = {**raw, "attribution": {**raw["attribution"], **attribution}}
    p = tmp / "bad.yaml"
    p.write_text(yaml.safe_dump(over, sort_keys=False))
    return cli("attribute", "--config", str(p))


def _qfile(tmp, content: bytes | str, name="q.jsonl"):
    p = tmp / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    p.write_bytes(content)
    return p


def _lines(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


# (queries-file content or None, config queries, words the message must contain)
CASES = {
    "no queries at all": (None, [], ["no queries to attribute", "attribution.queries"]),
    "empty file": ("", [], ["holds no queries", "q.jsonl"]),
    "blank lines only": ("\n  \n", [], ["holds no queries"]),
    "numeric prompt": (_lines({"prompt": 42, "completion": " x"}), [], ["line 1", "'prompt' must be a string", "int"]),
    "list prompt": (_lines(GOOD, {"prompt": ["a", "b"]}), [], ["line 2", "'prompt'", "list"]),
    "null prompt": (_lines({"prompt": None, "completion": " x"}), [], ["line 1", "'prompt'", "null"]),
    "missing prompt": (_lines({"completion": " x"}), [], ["line 1", "no 'prompt'"]),
    "empty prompt": (_lines({"prompt": "", "completion": " x"}), [], ["line 1", "prompt must not be empty"]),
    "numeric completion": (_lines({"prompt": "Q?", "completion": 7}), [], ["line 1", "'completion'"]),
    "empty completion": (_lines({"prompt": "Q?", "completion": ""}), [], ["line 1", "completion must not be empty"]),
    "numeric id": (_lines({"prompt": "Q?", "query_id": 3}), [], ["line 1", "'query_id'"]),
    "unknown key": (_lines({"prompt": "Q?", "completon": " x"}), [], ["line 1", "unknown key 'completon'"]),
    "array line": (_lines(GOOD, "", "[1, 2]"), [], ["line 3", "JSON list, not an object"]),
    "number line": (_lines("3"), [], ["line 1", "JSON int, not an object"]),
    "invalid json": (_lines(GOOD, "{prompt: 1}"), [], ["line 2", "not valid JSON"]),
    "duplicate ids in file": (_lines(GOOD, {**GOOD, "prompt": "Other?"}), [], ["'q2' is used twice", "line 1", "line 2"]),
    "duplicate id across config and file": (_lines(GOOD), [GOOD], ["'q2' is used twice", "attribution.queries[0]",
                                                                  "q.jsonl line 1"]),
    "duplicate ids in config": (None, [GOOD, {**GOOD, "prompt": "Other?"}], ["'q2' is used twice",
                                                                             "attribution.queries[1]"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_queries_are_refused_and_results_kept(trained, case):
    tmp, raw, keep = trained
    content, queries, words = CASES[case]
    before = [p.read_bytes() for p in keep]
    att = {"queries": queries, "queries_file": str(_qfile(tmp, content)) if content is not None else None}
    res = _attribute_with(tmp, raw, att)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert [p.read_bytes() for p in keep] == before


def test_non_utf8_queries_file_names_file_and_line(trained):
    tmp, raw, keep = trained
    before = [p.read_bytes() for p in keep]
    p = _qfile(tmp, _lines(GOOD).encode() + b'{"prompt": "caf\xe9?"}\n', "latin1.jsonl")
    res = _attribute_with(tmp, raw, {"queries": [], "queries_file": str(p)})
    assert res.exit_code == 2
    assert "latin1.jsonl is not UTF-8" in res.stderr and "line 2" in res.stderr
    assert [p.read_bytes() for p in keep] == before


def test_missing_queries_file_is_refused(trained):
    tmp, raw, _ = trained
    res = _attribute_with(tmp, raw, {"queries_file": str(tmp / "nope.jsonl")})
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_good_queries_file_with_config_queries_still_works(trained):
    tmp, raw, _ = trained
    other = dict(raw["attribution"]["queries"][0])
    res = _attribute_with(tmp, raw, {"queries_file": str(_qfile(tmp, "\ufeff" + _lines(GOOD, {"prompt": GOOD["prompt"],
                                                                                               "completion": " Oslo"})))})
    assert res.exit_code == 0, res.stderr
    out = json.loads((tmp / "run" / "attribution" / "results.json").read_text())
    assert [q["query_id"] for q in out["queries"]] == [other["query_id"], "q2", "q2-1"]


def test_run_refuses_no_queries_before_training(tmp_path):
    data = write_rows(tmp_path / "rows.jsonl")
    raw = raw_config(tmp_path / "run", data, attribution={"queries": []})
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(raw))
    res = cli("run", "--config", str(p))
    assert res.exit_code == 2 and "no queries to attribute" in res.stderr
    assert not (tmp_path / "run" / "model").exists(), "nothing may be trained for a run without queries"


def test_synthetic_corpus_without_builtin_queries_is_refused_before_the_model(tmp_path):
    cfg = small_config(tmp_path / "r", data={"planted": {"n_entities": 6, "n_facts": 0, "background_per_entity": 2}})
    with pytest.raises(DatablameError, match="has no built-in queries"):
        api.run(cfg)
    assert not (tmp_path / "r" / "model").exists()
    with pytest.raises(DatablameError, match="no queries to attribute"):
        api.attribute(cfg)  # before "no trained model": the queries are checked first


def test_synthetic_corpus_uses_builtin_queries_when_none_are_given(tmp_path):
    cfg = small_config(tmp_path / "r")
    assert config_queries(cfg.attribution) == []
    from datablame.data.queries import resolve_queries

    builtin = api.load_corpus(cfg)[1]
    assert resolve_queries(cfg, builtin) == builtin and builtin


def test_assigned_ids_never_collide_with_explicit_ones():
    qs = [Query("a", None, "q1"), Query("b", None, ""), Query("c", None, "q2"), Query("d", None, "")]
    assert [q.query_id for q in assign_ids(qs)] == ["q1", "q1-1", "q2", "q3"]


def test_config_and_file_queries_are_combined_in_order(tmp_path):
    p = _qfile(tmp_path, _lines({"prompt": "B?", "query_id": "b"}, {"prompt": "C?", "completion": " c"}))
    cfg = parse_config({"data": {"source": "planted"}, "model": {"kind": "tiny"},
                        "attribution": {"queries": [{"prompt": "A?"}], "queries_file": str(p)}})
    qs = config_queries(cfg.attribution)
    assert [(q.prompt, q.completion, q.query_id) for q in qs] == [("A?", None, ""), ("B?", None, "b"), ("C?", " c", "")]
