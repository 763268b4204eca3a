"""Prompts files: JSON and JSONL, one or several references, and the errors a user can make."""

from __future__ import annotations

import json

import pytest

from datablame.errors import DatablameError
from datablame.evaluate.prompts import load_prompts, require_references


def test_jsonl_with_reference_and_references(prompts_file):
    ps = load_prompts(prompts_file)
    assert [p.id for p in ps] == ["apple", "2", "3"]
    assert ps[0].references == ["the apple is red"]
    assert ps[1].references == ["green", "the kiwi is green"]


def test_json_list_and_object(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"prompt": "hi"}, "bare string"]), encoding="utf-8")
    assert [p.prompt for p in load_prompts(a)] == ["hi", "bare string"]
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"prompts": [{"prompt": "x", "reference": "y"}]}), encoding="utf-8")
    assert load_prompts(b)[0].references == ["y"]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p.jsonl", '{"prompt": "a"}\n{oops\n', "line 2 is not valid JSON"),
    ("p.json", '[{"question": "a"}]', 'item 1 has no "prompt"'),
    ("p.json", '[{"prompt": "a", "reference": 3}]', "references must be a string or a list"),
    ("p.json", '[{"prompt": "a", "id": 1}, {"prompt": "b", "id": 1}]', "id '1' is used twice"),
    ("p.json", "[]", "holds no prompts"),
])
def test_bad_prompts_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatablameError, match=message):
        load_prompts(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatablameError, match="does not exist") as err:
        load_prompts(tmp_path / "nope.jsonl")
    assert "--prompts" in err.value.fix


def test_reference_metric_without_references(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"prompt": "a", "reference": "b"}, {"id": "q2", "prompt": "c"}]), encoding="utf-8")
    with pytest.raises(DatablameError, match="bertscore .* 1 of 2 prompts .* id 'q2'") as err:
        require_references(load_prompts(path), "bertscore", path)
    assert "drop bertscore" in err.value.fix
