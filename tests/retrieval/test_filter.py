"""The metadata filter: a whitelisted expression language, never eval."""

from __future__ import annotations

import numpy as np
import pytest

from datablame.data.corpus import Corpus, Row
from datablame.errors import DatablameError
from datablame.retrieval import compile_filter

META = [
    {"source": "patents", "year": 2020, "license": "mit", "lang": "en"},
    {"source": "patents", "year": 2015, "license": None, "lang": "de"},
    {"source": "wiki", "year": 2021, "lang": "en"},
    {"source": "wiki", "year": 2019.5, "license": "cc", "lang": "fr", "clean": True},
    {"source": "forum", "lang": "en", "clean": False},
]


def corpus() -> Corpus:
    return Corpus([Row(f"r{i}", "p", "c", m) for i, m in enumerate(META)])


@pytest.mark.parametrize("expr, rows", [
    ("source == 'patents' and year >= 2019", [0]),
    ('source != "patents"', [2, 3, 4]),
    ("year < 2016 or lang == 'fr'", [1, 3]),
    ("not (lang == 'en')", [1, 3]),
    ("source in ['wiki', 'forum']", [2, 3, 4]),
    ("source not in ('wiki',)", [0, 1, 4]),
    ("2019 <= year < 2021", [0, 3]),
    ("year > -1e9", [0, 1, 2, 3]),  # a missing value never passes an ordering
    ("license is None", [1, 2, 4]),
    ("license is not None and year >= 2019", [0, 3]),
    ("clean", [3]),
    ("clean == False", [4]),
    ("'at' in source", [0, 1]),
    ("(source == 'wiki' or source == 'forum') and lang == 'en'", [2, 4]),
    ("True", [0, 1, 2, 3, 4]),
])
def test_valid_expressions(expr, rows):
    mask = compile_filter(expr).mask(corpus())
    assert mask.dtype == bool
    assert np.flatnonzero(mask).tolist() == rows


@pytest.mark.parametrize("expr, what", [
    ("__import__('os')", "Call"),
    ("__import__('os').system('true')", "Call"),
    ("source.upper() == 'WIKI'", "Call"),
    ("source.__class__ == 1", "Attribute"),
    ("open('/etc/passwd')", "Call"),
    ("year + 1 > 2020", "BinOp"),
    ("META[0] == 1", "Subscript"),
    ("lambda: 1", "Lambda"),
    ("[x for x in source]", "ListComp"),
    ("(y := 3) > 1", "NamedExpr"),
    ("year > 2019 if source else 1", "IfExp"),
    ("_private == 1", "names starting with '_'"),
    ("source is 'wiki'", "compare with None only"),
    ("year in source.split()", "'in' needs a list"),
    ("f'{year}' == '2020'", "JoinedStr"),
    ("year ==", "not a valid expression"),
    ("", "empty"),
])
def test_unsafe_or_invalid_is_rejected(expr, what):
    with pytest.raises(DatablameError) as err:
        compile_filter(expr)
    assert what in str(err.value)
    assert err.value.fix  # every rejection says how to write it instead


def test_rejection_names_what_is_allowed():
    with pytest.raises(DatablameError) as err:
        compile_filter("__import__('os')")
    assert "and/or/not" in err.value.fix and "comparisons" in err.value.fix


def test_unknown_column_is_an_error():
    with pytest.raises(DatablameError, match=r"names \['yaer'\], which no row has") as err:
        compile_filter("yaer >= 2019").mask(corpus())
    assert "year" in err.value.fix


def test_type_mismatch_names_the_row():
    with pytest.raises(DatablameError, match="cannot order 'patents'.*row 'r0'"):
        compile_filter("source > 3").mask(corpus())


def test_matches_single_row():
    f = compile_filter("source == 'wiki' and year >= 2020")
    assert f.matches({"source": "wiki", "year": 2021})
    assert not f.matches({"source": "wiki"})
    assert f.names == frozenset({"source", "year"})
