"""Decision (docs/architecture.md, "Decision"): calibration, fusion, overflow mapping, thresholds,
verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from agent.inference.decision import (
    DEFAULT_MATCH,
    DEFAULT_MISMATCH,
    Thresholds,
    calibrated_log_probs,
    decide,
    fuse,
    resolve_thresholds,
)
from contract.card import DecisionDefaults, OutputSpec

OUT = OutputSpec(counts=[0, 1, 2, 3, 4, 5], overflow=True, temperature=1.0)
TH = Thresholds(mismatch=0.1, match=0.6)


def logits_for(probs: list[float]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64))[None, :]


def test_temperature_flattens_the_distribution() -> None:
    z = np.array([[4.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    p1 = np.exp(calibrated_log_probs(z, 1.0))[0]
    p3 = np.exp(calibrated_log_probs(z, 3.0))[0]
    assert p1.sum() == pytest.approx(1.0) and p3.sum() == pytest.approx(1.0)
    assert p3[0] < p1[0]
    assert np.allclose(p3, np.exp(z[0] / 3) / np.exp(z[0] / 3).sum())


def test_calibration_is_stable_for_huge_logits() -> None:
    lp = calibrated_log_probs(np.array([[1e4, 0, 0, 0, 0, -1e4]]), 1.0)
    assert np.isfinite(lp).all()
    assert np.exp(lp[0, 0]) == pytest.approx(1.0)


def test_fusion_is_the_normalised_geometric_mean() -> None:
    a = np.log([0.7, 0.1, 0.1, 0.05, 0.03, 0.02])
    b = np.log([0.1, 0.7, 0.1, 0.05, 0.03, 0.02])
    fused = fuse(np.stack([a, b]))
    g = np.sqrt(np.exp(a) * np.exp(b))
    assert np.allclose(fused, g / g.sum())
    assert fused.sum() == pytest.approx(1.0)


def test_one_confident_wrong_frame_is_outvoted_by_two() -> None:
    z = np.stack(
        [logits_for([0.02, 0.02, 0.9, 0.02, 0.02, 0.02])[0]] * 2
        + [logits_for([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])[0]]
    )
    d = decide(z, OUT, 2, TH)
    assert d.frames == 3 and d.predicted_qty == 2


@pytest.mark.parametrize(
    ("p_expected", "verdict"),
    [
        (0.05, "mismatch"),
        (0.0999, "mismatch"),
        (0.1, "uncertain"),
        (0.59, "uncertain"),
        (0.6, "match"),
        (0.9, "match"),
    ],
)
def test_thresholds_split_the_verdicts(p_expected: float, verdict: str) -> None:
    rest = (1 - p_expected) / 5
    probs = [rest] * 6
    probs[3] = p_expected
    d = decide(logits_for(probs), OUT, 3, TH)
    assert d.p_expected == pytest.approx(p_expected, abs=1e-9)
    assert d.verdict == verdict


def test_expected_beyond_the_head_maps_to_the_overflow_class() -> None:
    probs = [0.01, 0.01, 0.01, 0.01, 0.01, 0.95]
    d = decide(logits_for(probs), OUT, 12, TH)
    assert d.p_expected == pytest.approx(0.95)
    assert d.verdict == "match"
    assert d.expected_qty == 12


def test_beyond_the_head_without_overflow_is_uncertain_not_an_alert() -> None:
    out = OutputSpec(counts=[0, 1, 2, 3, 4, 5], overflow=False)
    d = decide(logits_for([0.01, 0.01, 0.01, 0.01, 0.01, 0.95]), out, 12, TH)
    assert d.verdict == "uncertain" and d.p_expected is None
    assert "beyond" in d.reason


def test_no_expected_quantity_is_no_manifest() -> None:
    d = decide(logits_for([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]), OUT, None, TH)
    assert d.verdict == "no_manifest" and d.p_expected is None and d.predicted_qty == 0


def test_thresholds_precedence_config_over_card_over_defaults() -> None:
    card = DecisionDefaults(mismatch_threshold=0.2, match_threshold=0.7)
    assert resolve_thresholds(None) == Thresholds(DEFAULT_MISMATCH, DEFAULT_MATCH, "default")
    assert resolve_thresholds(card) == Thresholds(0.2, 0.7, "card")
    t = resolve_thresholds(card, mismatch_override=0.05)
    assert (t.mismatch, t.match, t.source) == (0.05, 0.7, "config")
    # an override past the other side clamps it instead of producing an impossible pair
    t = resolve_thresholds(card, mismatch_override=0.9)
    assert t.mismatch == t.match == 0.9


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="classes"):
        decide(np.zeros((1, 4)), OUT, 1, TH)
    with pytest.raises(ValueError, match=">= 0"):
        decide(np.zeros((1, 6)), OUT, -1, TH)
    with pytest.raises(ValueError, match="mismatch_threshold"):
        Thresholds(0.7, 0.2)
