"""Mismatch detection measured on labelled data with simulated manifest errors (the rule:
docs/architecture.md, "Decision"; how it is measured: docs/evaluation.md, "Mismatch detection and
the card's thresholds").

The agent compares the model's count distribution with the manifest's expected quantity ``e``:
``p_expected = P(count = e)`` (``e`` beyond the head maps to the overflow class, or has
probability 0 without one); ``p_expected < mismatch_threshold`` raises an alert,
``p_expected >= match_threshold`` is a match, between is "uncertain". The baseline it must beat is
the plain rule "alert when the argmax count differs from ``e``".

To measure both, :func:`simulate_manifests` takes labelled bins and gives a chosen fraction of them
a wrong expected quantity, ``true +- k`` (never negative, and within the head's counts unless it has
an overflow class); the rest keep ``expected = true``. An
alert on a simulated error is a hit (recall), an alert on a correct manifest is a false alarm.

- The ``p_expected`` rule has a knob: for a target false-alarm rate ``a`` the threshold is the
  empirical ``a``-quantile of ``p_expected`` over correct manifests (alert when strictly below), so
  the measured false-alarm rate never exceeds ``a``.
- The argmax rule has no knob: it has one operating point. Its recall "at" a false-alarm budget is
  its recall when its own false-alarm rate fits the budget, else 0 (the only way to meet the budget
  is never to alert). To compare like with like, the report also gives the ``p_expected`` rule's
  recall at the argmax rule's own false-alarm rate.

Defaults for the card (:func:`choose_thresholds`): ``mismatch_threshold`` is the threshold reaching
the target false-alarm rate (1% by default): an alert is a confident call. ``match_threshold`` is the
threshold reaching a looser rate (5% by default): bins between the two are the extra ones a 5% budget
would flag, i.e. the band where capturing more frames pays off. Frames are scored one at a time
here; the agent fuses several frames (mean log-probability), which can only sharpen the scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "choose_thresholds",
    "mismatch_report",
    "p_expected",
    "recall_at_false_alarm",
    "simulate_manifests",
    "simulate_scores",
    "threshold_for_false_alarm",
]

FA_RATES = (0.01, 0.05)


def simulate_manifests(
    true_counts: Sequence[int],
    rate: float = 0.5,
    ks: Sequence[int] = (1, 2),
    seed: int = 0,
    max_count: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected quantities for labelled bins: ``round(rate * n)`` bins get ``true +- k``.

    The shift is drawn uniformly from the valid ones among ``+-k`` for ``k`` in ``ks``: the expected
    count stays >= 0 and, when ``max_count`` is given (a head without an overflow class), <= it, so
    that no simulated error is trivially caught because the head cannot express it. Returns
    ``(expected, is_mismatch)``.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mismatch rate must be in [0, 1], got {rate}")
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    t = np.asarray(true_counts, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = len(t)
    is_mismatch = np.zeros(n, dtype=bool)
    is_mismatch[rng.permutation(n)[: round(rate * n)]] = True
    shifts = np.array(sorted({s * int(k) for k in ks for s in (-1, 1)}), dtype=np.int64)
    cand = t[:, None] + shifts[None, :]
    valid = cand >= 0
    if max_count is not None:
        valid &= cand <= max_count
    if (is_mismatch & ~valid.any(axis=1)).any():
        raise ValueError(f"no valid shift in +-{list(ks)} for some counts within [0, {max_count}]")
    # pick uniformly among the valid shifts of each row
    u = rng.random((n, len(shifts))) * valid
    delta = shifts[u.argmax(axis=1)]
    expected = np.where(is_mismatch, t + delta, t)
    return expected, is_mismatch


def p_expected(
    probs: np.ndarray, expected: Sequence[int], counts: Sequence[int], overflow: bool
) -> np.ndarray:
    """``P(count = expected)`` per row: the expected count's class, or the overflow class beyond the
    head; 0 for a count the head cannot express."""
    p = np.asarray(probs, dtype=np.float64)
    c = list(counts)
    e = np.asarray(expected, dtype=np.int64)
    idx = np.full(len(e), -1, dtype=np.int64)
    for i, v in enumerate(e):
        if v in c:
            idx[i] = c.index(int(v))
        elif overflow and v > c[-1]:
            idx[i] = len(c) - 1
    out = np.zeros(len(e), dtype=np.float64)
    ok = idx >= 0
    out[ok] = p[np.nonzero(ok)[0], idx[ok]]
    return out


def threshold_for_false_alarm(p_match: np.ndarray, rate: float) -> float:
    """The largest threshold ``t`` (from the data) with mean(p_match < t) <= rate."""
    neg = np.sort(np.asarray(p_match, dtype=np.float64))
    if len(neg) == 0:
        raise ValueError("no correct manifests to set a false-alarm threshold on")
    allowed = int(np.floor(rate * len(neg) + 1e-9))
    if allowed >= len(neg):
        return 1.0
    return float(neg[allowed])


def recall_at_false_alarm(p: np.ndarray, is_mismatch: np.ndarray, rate: float) -> dict[str, float]:
    """Threshold, measured false-alarm rate and recall of the ``p_expected`` rule at a budget."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(is_mismatch, dtype=bool)
    t = threshold_for_false_alarm(p[~y], rate)
    return _operating_point(p, y, t) | {"target_false_alarm_rate": float(rate)}


def _operating_point(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    alarm = p < threshold
    return {
        "threshold": float(threshold),
        "false_alarm_rate": float(alarm[~y].mean()) if (~y).any() else 0.0,
        "recall": float(alarm[y].mean()) if y.any() else 0.0,
    }


def _auroc(y: np.ndarray, score: np.ndarray) -> Optional[float]:
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def simulate_scores(
    probs: np.ndarray,
    true_counts: Sequence[int],
    counts: Sequence[int],
    overflow: bool,
    rate: float = 0.5,
    ks: Sequence[int] = (1, 2),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulated manifests scored by both rules: ``(p_expected, argmax_alarm, is_mismatch)``."""
    probs = np.asarray(probs, dtype=np.float64)
    max_count = None if overflow else int(list(counts)[-1])
    expected, y = simulate_manifests(true_counts, rate=rate, ks=ks, seed=seed, max_count=max_count)
    pe = p_expected(probs, expected, counts, overflow)
    one_hot = np.eye(probs.shape[1])[probs.argmax(axis=1)]
    argmax_alarm = p_expected(one_hot, expected, counts, overflow) < 0.5
    return pe, argmax_alarm, y


def mismatch_report(
    probs: np.ndarray,
    true_counts: Sequence[int],
    counts: Sequence[int],
    overflow: bool,
    rate: float = 0.5,
    ks: Sequence[int] = (1, 2),
    seed: int = 0,
    fa_rates: Sequence[float] = FA_RATES,
) -> dict[str, Any]:
    """Simulate manifest errors on labelled bins and score both decision rules.

    Returns plain JSON-able data: the simulation settings, for each rule its AUROC and its operating
    points at ``fa_rates``, the argmax rule's own operating point, and the ``p_expected`` rule at
    the argmax rule's false-alarm rate.
    """
    pe, argmax_alarm, y = simulate_scores(probs, true_counts, counts, overflow, rate, ks, seed)
    has_neg, has_pos = bool((~y).any()), bool(y.any())
    am_fa = float(argmax_alarm[~y].mean()) if has_neg else 0.0
    am_recall = float(argmax_alarm[y].mean()) if has_pos else 0.0
    rules: dict[str, Any] = {
        "p_expected": {
            "auroc": _auroc(y, 1.0 - pe),
            "operating_points": [recall_at_false_alarm(pe, y, a) for a in fa_rates] if has_neg else [],
        },
        "argmax": {
            "auroc": _auroc(y, argmax_alarm.astype(np.float64)),
            "false_alarm_rate": am_fa,
            "recall": am_recall,
            "operating_points": [
                {
                    "target_false_alarm_rate": float(a),
                    "false_alarm_rate": am_fa if am_fa <= a else 0.0,
                    "recall": am_recall if am_fa <= a else 0.0,
                }
                for a in fa_rates
            ],
        },
    }
    return {
        "n": len(y),
        "n_mismatch": int(y.sum()),
        "n_match": int((~y).sum()),
        "rate": float(rate),
        "ks": [int(k) for k in ks],
        "seed": int(seed),
        "rules": rules,
        "p_expected_at_argmax_false_alarm_rate": (
            recall_at_false_alarm(pe, y, am_fa) if has_neg and has_pos else None
        ),
    }


def choose_thresholds(
    probs: np.ndarray,
    true_counts: Sequence[int],
    counts: Sequence[int],
    overflow: bool,
    false_alarm_rate: float = 0.01,
    match_false_alarm_rate: float = 0.05,
    rate: float = 0.5,
    ks: Sequence[int] = (1, 2),
    seed: int = 0,
    fitted_on: Optional[str] = None,
) -> dict[str, Any]:
    """Decision defaults for the card (``contract.card.DecisionDefaults`` fields).

    ``mismatch_threshold`` reaches ``false_alarm_rate`` (the stated rate stored in the card) on the
    simulated manifests, ``match_threshold`` the looser ``match_false_alarm_rate``; ``recall`` is
    measured at the mismatch threshold on the same data.
    """
    if match_false_alarm_rate < false_alarm_rate:
        raise ValueError("match_false_alarm_rate must be >= false_alarm_rate")
    pe, _, y = simulate_scores(probs, true_counts, counts, overflow, rate, ks, seed)
    lo = recall_at_false_alarm(pe, y, false_alarm_rate)
    hi = recall_at_false_alarm(pe, y, match_false_alarm_rate)
    return {
        "mismatch_threshold": lo["threshold"],
        "match_threshold": max(hi["threshold"], lo["threshold"]),
        "false_alarm_rate": float(false_alarm_rate),
        "recall": lo["recall"],
        "fitted_on": fitted_on,
    }
