"""Counting metrics (abid_challenge definitions) and the two decodings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    confusion_matrix,
    count_metrics,
    decode_argmax,
    decode_rmse_optimal,
    head_counts,
    softmax,
)

COUNTS = [0, 1, 2, 3, 4, 5]


def abid_challenge_reference(pred: list[int], gt: list[int]) -> tuple[float, float, list[float], list[float]]:
    """The arithmetic of abid_challenge's counting/evaluate.py, per-class sums then ratios."""
    correct = np.zeros(6)
    dist = np.zeros(6)
    n = np.zeros(6)
    for p, g in zip(pred, gt, strict=False):
        correct[g] += int(p == g)
        dist[g] += (p - g) ** 2
        n[g] += 1
    with np.errstate(invalid="ignore"):
        return (
            correct.sum() / n.sum(),
            math.sqrt(dist.sum() / n.sum()),
            list(correct / n),
            list(np.sqrt(dist / n)),
        )


def test_count_metrics_match_abid_challenge_definitions():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, 500).tolist()
    pred = np.clip(np.array(gt) + rng.integers(-2, 3, 500), 0, 5).tolist()
    m = count_metrics(gt, pred, COUNTS)
    acc, rmse, pc_acc, pc_rmse = abid_challenge_reference(pred, gt)
    assert m["n"] == 500
    assert m["accuracy"] == pytest.approx(acc)
    assert m["rmse"] == pytest.approx(rmse)
    assert m["mae"] == pytest.approx(np.mean(np.abs(np.array(pred) - np.array(gt))))
    for c in COUNTS:
        assert m["per_class"][str(c)]["accuracy"] == pytest.approx(pc_acc[c])
        assert m["per_class"][str(c)]["rmse"] == pytest.approx(pc_rmse[c])
    cm = np.array(m["confusion"])
    assert cm.sum() == 500
    assert np.trace(cm) == sum(p == g for p, g in zip(pred, gt, strict=False))
    assert cm[2, 4] == sum(1 for p, g in zip(pred, gt, strict=False) if g == 2 and p == 4)


def test_empty_class_is_reported_as_none():
    m = count_metrics([1, 1, 2], [1, 2, 2], [0, 1, 2])
    assert m["per_class"]["0"] == {"n": 0, "accuracy": None, "rmse": None}
    assert m["per_class"]["1"]["accuracy"] == 0.5


def test_decodings_differ_where_they_should():
    # bimodal: argmax says 0, but the mean is 2.4 -> the RMSE-optimal integer is 2
    p = np.array([[0.4, 0.0, 0.0, 0.0, 0.3, 0.3]])
    assert decode_argmax(p, COUNTS).tolist() == [0]
    assert decode_rmse_optimal(p, COUNTS).tolist() == [round(0.3 * 4 + 0.3 * 5)]
    # the RMSE-optimal choice minimises expected squared error among integers
    for row in np.random.default_rng(0).dirichlet(np.ones(6), size=50):
        best = min(range(6), key=lambda n: float(np.sum(row * (n - np.arange(6)) ** 2)))
        assert decode_rmse_optimal(row[None], COUNTS)[0] == best


def test_rmse_optimal_decoding_lowers_rmse_on_uncertain_predictions():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 6, 2000)
    # a blurry model: probability mass spread around the truth, with a noisy peak
    logits = -0.6 * (np.arange(6)[None, :] - gt[:, None]) ** 2 + rng.normal(0, 1.0, (2000, 6))
    p = softmax(logits)
    a = count_metrics(gt, decode_argmax(p, COUNTS), COUNTS)
    r = count_metrics(gt, decode_rmse_optimal(p, COUNTS), COUNTS)
    assert r["rmse"] < a["rmse"]


def test_head_counts_maps_overflow_and_rejects_unrepresentable():
    assert head_counts([0, 3, 9], [0, 1, 2, 3], overflow=True).tolist() == [0, 3, 3]
    with pytest.raises(ValueError, match="no class"):
        head_counts([0, 9], [0, 1, 2, 3], overflow=False)


def test_confusion_places_off_head_predictions_in_nearest_column():
    # head [0, 2, 5]: a predicted 4 is nearest 5, a predicted 1 is nearest... 0 and 2 tie -> first
    cm = confusion_matrix([0, 2, 5, 5], [1, 2, 4, 0], [0, 2, 5])
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_softmax_temperature_keeps_argmax():
    z = np.random.default_rng(2).normal(size=(20, 6)) * 4
    for t in (0.3, 1.0, 3.0):
        p = softmax(z, t)
        assert np.allclose(p.sum(axis=1), 1)
        assert (p.argmax(1) == z.argmax(1)).all()
    assert softmax(z, 3.0).max(1).mean() < softmax(z, 1.0).max(1).mean()


def test_overflow_rmse_uses_unclipped_true_counts():
    """Head 0..5 with "5 or more": a bin of 9 predicted as the overflow class is right for accuracy
    but 4 off for RMSE/MAE (the overflow prediction counts as 5)."""
    counts = [0, 1, 2, 3, 4, 5]
    raw = [9, 5, 2]
    true = head_counts(raw, counts, overflow=True)
    pred = [5, 5, 1]
    m = count_metrics(true, pred, counts, raw_true=raw)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((16 + 0 + 1) / 3))
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["per_class"]["5"]["accuracy"] == 1.0
    assert m["per_class"]["5"]["rmse"] == pytest.approx(math.sqrt(16 / 2))
    # without raw_true the old (clipped) behaviour stays for callers that have no overflow
    assert count_metrics(true, pred, counts)["rmse"] == pytest.approx(math.sqrt(1 / 3))
