"""Statistics of the removal test on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datablame.verify.stats import (
    bootstrap_mean,
    removal_effect,
    spearman,
    t_interval,
    t_test_p,
    verdict,
)


def test_t_interval_by_hand():
    # mean 2, sd 1, sem 1/sqrt(3); t_{0.975, df=2} = 0.95 * sqrt(2 / (1 - 0.95^2)) = 4.30265
    t975 = 0.95 * math.sqrt(2 / (1 - 0.95**2))
    iv = t_interval([1.0, 2.0, 3.0], 0.95)
    assert iv.mean == pytest.approx(2.0)
    assert iv.low == pytest.approx(2 - t975 / math.sqrt(3), rel=1e-6)
    assert iv.high == pytest.approx(2 + t975 / math.sqrt(3), rel=1e-6)
    assert iv.n == 3
    one = t_interval([5.0])
    assert one.mean == 5.0 and math.isnan(one.low) and math.isnan(one.high)


def test_t_test_p_by_hand():
    # t = 2 / (1/sqrt(3)) = sqrt(12); df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)) = 1/2 + sqrt(12)/(2 sqrt(14))
    t = math.sqrt(12)
    p = 2 * (1 - (0.5 + t / (2 * math.sqrt(2 + t * t))))
    assert t_test_p([1.0, 2.0, 3.0]) == pytest.approx(p, rel=1e-6)
    assert t_test_p([1.0, -1.0]) == pytest.approx(1.0)
    assert math.isnan(t_test_p([1.0]))
    assert t_test_p([0.5, 0.5, 0.5]) == 0.0  # no spread, not zero: certain


def test_removal_effect_by_hand():
    top = np.array([2.0, 3.0])
    controls = np.array([[1.0, 1.0], [2.0, 0.0]])  # draw means 1, 1
    baseline = np.array([0.5, 0.5])
    eff = removal_effect(top, controls, baseline)
    # per seed: 2 - 1 = 1, 3 - 1 = 2 -> mean 1.5; control rises 0.5, 0.5, 1.5, -0.5
    assert eff.effect.mean == pytest.approx(1.5)
    assert eff.top_rise == pytest.approx(2.0)
    assert eff.control_rise == pytest.approx(0.5)
    assert eff.control_sd == pytest.approx(math.sqrt(2 / 3))
    assert eff.standardized == pytest.approx(1.5 / math.sqrt(2 / 3))
    assert eff.baseline_loss == pytest.approx(0.5)
    # two seeds: t_{0.975, 1} = tan(0.475 pi) = 12.7062, sem 0.5
    half = math.tan(0.475 * math.pi) * 0.5
    assert eff.effect.low == pytest.approx(1.5 - half, rel=1e-6)
    assert eff.p_value == pytest.approx(t_test_p([1.0, 2.0]))


def test_spearman_by_hand():
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6*2/(3*8)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3) -> r = 0.8660
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_bootstrap_mean_covers_and_is_seeded():
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    a = bootstrap_mean(x, seed=3)
    b = bootstrap_mean(x, seed=3)
    assert a == b
    assert a.mean == pytest.approx(0.3)
    assert 0.1 <= a.low < 0.3 < a.high <= 0.5
    one = bootstrap_mean([0.7])
    assert one.mean == 0.7 and math.isnan(one.low)
    assert bootstrap_mean([float("nan"), 1.0, 3.0]).n == 2  # undefined values are dropped


def _effect(per_seed, control_sd=0.1):
    base = np.zeros(len(per_seed))
    controls = np.tile(np.array([[-control_sd, control_sd]]), (len(per_seed), 1))  # mean 0
    return removal_effect(np.asarray(per_seed, dtype=float), controls, base)


def test_verdicts_follow_seed_001():
    strong = _effect([1.0, 1.1, 0.9, 1.05, 0.95])
    assert verdict(strong, changed_top=1.0, changed_control=0.0) == "confirmed"
    assert verdict(strong, changed_top=0.2, changed_control=0.0) == "partial"  # output survived
    assert verdict(strong, changed_top=0.6, changed_control=0.8) == "partial"  # random rows change it too
    noisy = _effect([0.5, -0.4, 0.3, -0.6, 0.1])
    assert verdict(noisy, changed_top=1.0, changed_control=0.0) == "not influential"
    lowered = _effect([-1.0, -1.1, -0.9, -1.05, -0.95])  # removal *lowered* the loss
    assert verdict(lowered, changed_top=1.0, changed_control=0.0) == "not influential"
    single = _effect([1.0], control_sd=0.1)  # one seed: compare with the control spread
    assert verdict(single, changed_top=1.0, changed_control=0.0) == "confirmed"
