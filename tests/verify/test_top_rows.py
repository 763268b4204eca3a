"""top_rows: the rows `datablame verify` removes, taken from a result's scores."""

from pathlib import Path

import numpy as np
import pytest

from datablame.errors import DatablameError
from datablame.verify.removal import _Attribution, top_rows


def _att(scores: np.ndarray) -> _Attribution:
    return _Attribution(Path("results.json"), [], ["m"], {"m": [[]]}, {"m": scores})


def test_top_rows_are_the_highest_scores_in_row_order_for_ties():
    att = _att(np.array([[0.1, 0.9, 0.5, 0.9]]))
    assert top_rows(att, {}, "m", 0, 3) == [1, 3, 2]


def test_cascade_result_refuses_k_beyond_its_candidates():
    att = _att(np.array([[0.3, -np.inf, 0.7, -np.inf]]))
    assert top_rows(att, {}, "m", 0, 2) == [2, 0]
    with pytest.raises(DatablameError, match="candidate rows"):
        top_rows(att, {}, "m", 0, 3)
