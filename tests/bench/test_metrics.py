import math

import numpy as np
import pytest

from datablame.metrics import (
    average_precision,
    bootstrap_ci,
    evaluate,
    mean_metric,
    precision_at_k,
    precision_recall_curve,
    query_metrics,
    recall_at_k,
    reciprocal_rank,
    roc_auc,
    summarize,
    topk_jaccard,
)

# ranking by score: rows 3, 0, 4, 1, 2  (row 3 best)
S = np.array([0.8, 0.3, 0.1, 0.9, 0.5])


def test_recall_precision_by_hand():
    assert recall_at_k(S, [0, 2], 2) == 0.5  # top-2 = {3, 0}
    assert recall_at_k(S, [0, 2], 5) == 1.0
    assert precision_at_k(S, [0, 2], 2) == 0.5
    assert math.isnan(recall_at_k(S, [], 3))


def test_recall_at_1_by_hand():
    assert recall_at_k(S, [3], 1) == 1.0
    assert recall_at_k(S, [0], 1) == 0.0
    assert recall_at_k(S, [3, 0], 1) == 0.5  # one of the two true rows is first
    assert precision_at_k(S, [3, 0], 1) == 1.0


def test_mrr_and_ap_by_hand():
    assert reciprocal_rank(S, [4]) == 1 / 3
    assert reciprocal_rank(S, []) == 0.0
    # relevant {0, 2}: ranks 2 and 5 -> AP = (1/2 + 2/5) / 2
    assert abs(average_precision(S, [0, 2]) - (0.5 + 0.4) / 2) < 1e-12


def test_roc_auc_by_hand():
    # true rows score 0.8 and 0.1; others 0.3, 0.9, 0.5: 0.8 beats 0.3 and 0.5, 0.1 beats
    # nothing -> 2 of 6 pairs
    assert roc_auc(S, [0, 2]) == pytest.approx(2 / 6)
    assert roc_auc(S, [3]) == 1.0  # the best row
    assert roc_auc(S, [2]) == 0.0  # the worst row
    # ties count one half: true {0, 2} vs others {1, 3} with scores 1, 1, 0, 0
    assert roc_auc(np.array([1.0, 1.0, 0.0, 0.0]), [0, 2]) == pytest.approx(0.5)
    assert math.isnan(roc_auc(S, [])) and math.isnan(roc_auc(S, range(5)))


def test_roc_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=60).astype(float)  # many ties
    rel = rng.choice(60, size=9, replace=False)
    y = np.zeros(60)
    y[rel] = 1
    assert roc_auc(s, rel) == pytest.approx(roc_auc_score(y, s))


def test_ties_break_by_row_order():
    assert recall_at_k(np.zeros(4), [0], 1) == 1.0
    assert recall_at_k(np.zeros(4), [3], 1) == 0.0


def test_precision_recall_curve_by_hand():
    recall, precision = precision_recall_curve(S, [0, 2])  # order 3, 0, 4, 1, 2
    assert recall.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    assert precision.tolist() == pytest.approx([0.0, 0.5, 1 / 3, 0.25, 0.4])


def test_query_metrics_and_evaluate():
    m = query_metrics(S, [0, 2])
    assert set(m) == {"recall@1", "recall@5", "recall@10", "precision@1", "precision@5",
                      "precision@10", "mrr", "ap", "roc_auc"}
    assert m["recall@1"] == 0.0 and m["mrr"] == 0.5 and m["precision@5"] == 0.4
    assert m["precision@10"] == 0.4  # only 5 rows: precision over the rows there are
    per = evaluate(np.stack([S, -S]), [[3], [2]])
    assert per[0]["ap"] == 1.0 and per[1]["ap"] == 1.0 and per[1]["roc_auc"] == 1.0


def test_bootstrap_ci_contains_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    vals = rng.uniform(size=40).tolist()
    lo, hi = bootstrap_ci(vals, seed=3)
    assert lo < mean_metric(vals) < hi
    assert (lo, hi) == bootstrap_ci(vals, seed=3)  # deterministic
    assert (lo, hi) != bootstrap_ci(vals, seed=4)
    wide = bootstrap_ci(vals, confidence=0.99, seed=3)
    assert wide[0] <= lo and wide[1] >= hi
    assert bootstrap_ci([0.7, 0.7, float("nan")]) == (0.7, 0.7)
    assert all(math.isnan(x) for x in bootstrap_ci([float("nan")]))


def test_summarize_skips_nan():
    per = [{"ap": 1.0, "roc_auc": float("nan")}, {"ap": 0.5, "roc_auc": 0.75}]
    s = summarize(per, n_boot=200)
    assert s["ap"]["mean"] == 0.75 and s["ap"]["n"] == 2
    assert s["roc_auc"]["mean"] == 0.75 and s["roc_auc"]["n"] == 1
    assert s["ap"]["ci_low"] <= 0.75 <= s["ap"]["ci_high"]


def test_topk_jaccard_by_hand():
    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    b = np.array([5.0, 0.0, 3.0, 2.0, 9.0])  # top-3: {4, 0, 2} vs a's {0, 1, 2}
    assert topk_jaccard(a, b, 3) == pytest.approx(2 / 4)
    assert topk_jaccard(a, a, 3) == 1.0
    assert topk_jaccard(a, -a, 2) == 0.0  # {0, 1} vs {4, 3}
