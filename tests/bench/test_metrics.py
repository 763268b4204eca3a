import math

import numpy as np

from datablame.bench.metrics import average_precision, precision_at_k, recall_at_k, reciprocal_rank

# ranking by score: rows 3, 0, 4, 1, 2  (row 3 best)
S = np.array([0.8, 0.3, 0.1, 0.9, 0.5])


def test_recall_precision_by_hand():
    assert recall_at_k(S, [0, 2], 2) == 0.5  # top-2 = {3, 0}
    assert recall_at_k(S, [0, 2], 5) == 1.0
    assert precision_at_k(S, [0, 2], 2) == 0.5
    assert math.isnan(recall_at_k(S, [], 3))


def test_mrr_and_ap_by_hand():
    assert reciprocal_rank(S, [4]) == 1 / 3
    # relevant {0, 2}: ranks 2 and 5 -> AP = (1/2 + 2/5) / 2
    assert abs(average_precision(S, [0, 2]) - (0.5 + 0.4) / 2) < 1e-12


def test_ties_break_by_row_order():
    assert recall_at_k(np.zeros(4), [0], 1) == 1.0
    assert recall_at_k(np.zeros(4), [3], 1) == 0.0
