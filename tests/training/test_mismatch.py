"""Mismatch detection on simulated manifest errors: the agent's p_expected rule (docs/evaluation.md)
against argmax."""

from __future__ import annotations

import numpy as np
import pytest

from contract.card import DecisionDefaults
from training.metrics import softmax
from training.mismatch import (
    choose_thresholds,
    mismatch_report,
    p_expected,
    recall_at_false_alarm,
    simulate_manifests,
    threshold_for_false_alarm,
)

COUNTS = [0, 1, 2, 3, 4, 5]


def test_simulated_manifests():
    true = np.random.default_rng(0).integers(0, 6, 1000)
    expected, wrong = simulate_manifests(true, rate=0.3, ks=(1, 2), seed=5)
    assert wrong.sum() == 300
    assert (expected[~wrong] == true[~wrong]).all()
    assert set(np.abs(expected[wrong] - true[wrong]).tolist()) == {1, 2}
    assert (expected >= 0).all()
    # true 0 can only be misreported upwards
    assert (expected[wrong & (true == 0)] > 0).all()
    again, wrong2 = simulate_manifests(true, rate=0.3, ks=(1, 2), seed=5)
    assert (again == expected).all() and (wrong2 == wrong).all()
    # a head without overflow: errors stay expressible (0..5), so none is caught for free
    bounded, wrong3 = simulate_manifests(true, rate=0.5, ks=(1, 2), seed=6, max_count=5)
    assert bounded.max() <= 5 and (bounded[wrong3] != true[wrong3]).all()
    assert (bounded[wrong3 & (true == 5)] < 5).all()


def test_p_expected_maps_overflow_and_unrepresentable_counts():
    p = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    assert p_expected(p, [1, 9], [0, 1, 2], overflow=True).tolist() == [0.2, 0.2]
    assert p_expected(p, [2, 9], [0, 1, 2], overflow=False).tolist() == [0.7, 0.0]


def test_perfect_model_catches_every_error_at_one_percent():
    true = np.random.default_rng(1).integers(0, 6, 2000)
    probs = np.eye(6)[true]
    r = mismatch_report(probs, true, COUNTS, overflow=False, rate=0.5, seed=1)
    pe = r["rules"]["p_expected"]
    assert pe["auroc"] == 1.0
    at1 = pe["operating_points"][0]
    assert at1["target_false_alarm_rate"] == 0.01
    assert at1["recall"] == 1.0 and at1["false_alarm_rate"] == 0.0
    assert r["rules"]["argmax"]["recall"] == 1.0 and r["rules"]["argmax"]["false_alarm_rate"] == 0.0


def test_random_model_is_at_chance():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 6, 6000)
    probs = rng.dirichlet(np.ones(6), size=6000)  # knows nothing about the truth
    r = mismatch_report(probs, true, COUNTS, overflow=False, rate=0.5, seed=2)
    assert r["rules"]["p_expected"]["auroc"] == pytest.approx(0.5, abs=0.03)
    assert r["rules"]["argmax"]["auroc"] == pytest.approx(0.5, abs=0.03)
    for op in r["rules"]["p_expected"]["operating_points"]:
        assert op["recall"] == pytest.approx(op["target_false_alarm_rate"], abs=0.02)


def test_threshold_meets_the_false_alarm_budget_and_is_the_loosest_that_does():
    rng = np.random.default_rng(3)
    p_match = rng.beta(5, 1, 1000)
    for rate in (0.0, 0.01, 0.05, 0.2):
        t = threshold_for_false_alarm(p_match, rate)
        assert np.mean(p_match < t) <= rate
        above = p_match[p_match > t]
        if len(above):
            assert np.mean(p_match < above.min()) > rate  # any looser threshold breaks the budget
    assert threshold_for_false_alarm(p_match, 1.0) == 1.0


def blurry_model(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 6, n)
    logits = -0.8 * (np.arange(6)[None, :] - true[:, None]) ** 2 + rng.normal(0, 1.2, (n, 6))
    return softmax(logits), true


def test_p_expected_rule_beats_argmax_where_false_alarms_are_scarce():
    probs, true = blurry_model(4000, seed=4)
    r = mismatch_report(probs, true, COUNTS, overflow=False, rate=0.5, seed=4)
    am, pe = r["rules"]["argmax"], r["rules"]["p_expected"]
    # a ~58%-accurate model: the argmax rule flags a large share of correct manifests ...
    assert am["false_alarm_rate"] > 0.2
    # ... and, having no knob, meets a 1% or 5% false-alarm budget only by never alerting
    for op_am, op_pe in zip(am["operating_points"], pe["operating_points"], strict=False):
        assert op_am["recall"] == 0.0
        assert op_pe["false_alarm_rate"] <= op_pe["target_false_alarm_rate"]
        assert op_pe["recall"] > 0.2
    assert pe["auroc"] > am["auroc"] + 0.05
    # at the argmax rule's own operating point the p_expected rule is as good (within noise)
    same = r["p_expected_at_argmax_false_alarm_rate"]
    assert same["false_alarm_rate"] <= am["false_alarm_rate"]
    assert same["recall"] >= am["recall"] - 0.02


def test_chosen_thresholds_fit_the_card_and_hold_on_fresh_data():
    probs, true = blurry_model(4000, seed=5)
    d = choose_thresholds(probs, true, COUNTS, overflow=False, false_alarm_rate=0.01, fitted_on="val")
    card_decision = DecisionDefaults(**d)
    assert card_decision.mismatch_threshold <= card_decision.match_threshold
    assert card_decision.false_alarm_rate == 0.01 and 0 < card_decision.recall <= 1
    # on fresh data from the same model, the false-alarm rate stays near the target
    probs2, true2 = blurry_model(4000, seed=6)
    expected, wrong = simulate_manifests(true2, rate=0.5, seed=7)
    pe = p_expected(probs2, expected, COUNTS, overflow=False)
    assert np.mean(pe[~wrong] < d["mismatch_threshold"]) < 0.025
    again = recall_at_false_alarm(pe, wrong, 0.01)
    assert again["false_alarm_rate"] <= 0.01
