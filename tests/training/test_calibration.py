"""Temperature scaling and expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import ece, fit_temperature, nll, reliability
from training.metrics import softmax


def sampled_set(n: int, true_t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / true_t): calibrated exactly at true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, (n, 6))
    p = softmax(z, true_t)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_recovers_the_generating_temperature(true_t):
    z, y = sampled_set(6000, true_t, seed=1)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.08)


def test_temperature_lowers_calibration_error_on_held_out_data():
    # an over-confident model: labels follow softmax(z / 2.5), the model reports softmax(z)
    z_val, y_val = sampled_set(3000, 2.5, seed=2)
    z_test, y_test = sampled_set(3000, 2.5, seed=3)
    t = fit_temperature(z_val, y_val)
    assert t > 1.5
    before, after = ece(softmax(z_test), y_test), ece(softmax(z_test, t), y_test)
    assert after < 0.5 * before
    assert nll(z_test, y_test, t) < nll(z_test, y_test)


def test_ece_by_hand():
    # two bins used: conf 0.9 (1 of 2 right) and conf 0.6 (1 of 1 right)
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    y = np.array([0, 1, 1])
    expected = 2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6)
    assert ece(p, y) == pytest.approx(expected)
    r = reliability(p, y)
    assert sum(r["count"]) == 3
    assert len(r["count"]) == 15 and len(r["edges"]) == 16
    assert r["count"][13] == 2  # 0.9 lies in (13/15, 14/15]


def test_perfectly_calibrated_confidences_have_small_ece():
    z, y = sampled_set(20000, 1.0, seed=4)
    assert ece(softmax(z), y) < 0.02


def test_nothing_to_fit_returns_one():
    assert fit_temperature(np.zeros((0, 6)), np.zeros(0, dtype=int)) == 1.0
