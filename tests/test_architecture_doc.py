"""docs/architecture.md's "add a method in one file" example, run as written: it registers,
validates its options at config load, shows in `datablame methods`, and scores through
`run_method` like every built-in method."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from datablame.api import load_config
from datablame.errors import DatablameError
from datablame.methods import REGISTRY, describe_all, run_method

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent / "methods")]
from pipeline_config import small_config  # noqa: E402
from test_baselines import QUERIES, ROWS, tiny_inputs  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if "@register" in b]
    assert len(found) == 1, "the page holds one method example"
    return found[0]


@pytest.fixture
def word_jaccard():
    module = types.ModuleType("datablame_doc_example")
    exec(compile(_example_source(), str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own doc
    try:
        yield REGISTRY["word_jaccard"]
    finally:
        REGISTRY.pop("word_jaccard", None)


def test_the_documented_method_registers_and_scores(word_jaccard):
    assert word_jaccard.__module__ == "datablame_doc_example"
    ctx = tiny_inputs()
    run = run_method(ctx, "word_jaccard")
    assert run.scores.shape == (len(QUERIES), len(ROWS)) and run.scores.dtype == np.float64
    assert np.all((run.scores >= 0) & (run.scores <= 1))
    # the row sharing the query's words ranks first, as for bm25
    assert [int(np.argmax(s)) for s in run.scores] == [t for *_, t in QUERIES]
    # an option changes the scores (long words only)
    assert not np.allclose(run_method(ctx, "word_jaccard", {"min_len": 6}).scores, run.scores)
    listed = {m["name"]: m for m in describe_all()}["word_jaccard"]
    assert listed["family"] == "lexical" and [o["name"] for o in listed["options"]] == ["min_len"]


def test_the_documented_options_are_checked_at_config_load(word_jaccard, tmp_path):
    raw = small_config(tmp_path / "run").model_dump(mode="json")
    raw["attribution"]["methods"] = ["word_jaccard"]
    path = tmp_path / "run.yaml"

    def load(options: dict):
        raw["attribution"]["options"] = {"word_jaccard": options}
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return load_config(path)

    assert load({"min_len": 3}).attribution.options["word_jaccard"] == {"min_len": 3}
    for bad, needle in [({"min_len": 0}, "min_len"), ({"min_length": 2}, "unknown option")]:
        with pytest.raises(DatablameError) as err:
            load(bad)
        assert "attribution.options.word_jaccard" in err.value.problem and needle in err.value.problem
