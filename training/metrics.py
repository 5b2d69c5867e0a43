"""Counting metrics with abid_challenge's definitions, and the two ways to decode a distribution.

abid_challenge (``counting/evaluate.py``) scores one predicted count per image against the true
count: accuracy = mean(pred == true), RMSE = sqrt(mean((pred - true)^2)), and both per true class.
Everything here works in *count space* (the integers the head stands for, ``card.output.counts``),
so the definitions hold for heads that do not start at 0 or skip counts.

Decoding a probability vector ``p`` over the head's counts ``c``:

- ``argmax``: the most likely count, ``c[argmax p]`` (maximises accuracy);
- ``rmse_optimal``: the integer nearest the expected count ``sum_k p_k c_k``. For squared error,
  ``E[(n - X)^2] = (n - E X)^2 + Var X``, so the integer nearest the mean minimises expected RMSE.

With an overflow head ("K or more"), the overflow class counts as K for the expectation and for the
predictions. Accuracy maps true counts beyond K to K (predicting "K or more" for 7 items is right;
see :func:`head_counts`), but RMSE and MAE use the unclipped true counts (``raw_true`` of
:func:`count_metrics`): a bin of 9 predicted as the overflow class K = 5 is 4 off, not 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "DECODINGS",
    "confusion_matrix",
    "count_metrics",
    "decode",
    "decode_argmax",
    "decode_rmse_optimal",
    "expected_count",
    "head_counts",
    "log_softmax",
    "softmax",
]

DECODINGS = ("argmax", "rmse_optimal")


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise log-softmax of ``logits / temperature`` (float64, numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    return np.exp(log_softmax(logits, temperature))


def expected_count(probs: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """``sum_k p_k * counts[k]`` per row."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(counts, dtype=np.float64)


def decode_argmax(probs: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The count of the most likely class, per row."""
    return np.asarray(counts, dtype=np.int64)[np.asarray(probs).argmax(axis=1)]


def decode_rmse_optimal(probs: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The integer nearest the expected count, per row (halves round up, never below 0)."""
    return np.maximum(np.floor(expected_count(probs, counts) + 0.5), 0).astype(np.int64)


def decode(probs: np.ndarray, counts: Sequence[int], how: str) -> np.ndarray:
    if how == "argmax":
        return decode_argmax(probs, counts)
    if how == "rmse_optimal":
        return decode_rmse_optimal(probs, counts)
    raise ValueError(f"unknown decoding {how!r}; choose one of {', '.join(DECODINGS)}")


def head_counts(true_counts: Sequence[int], counts: Sequence[int], overflow: bool) -> np.ndarray:
    """True counts as the head sees them: beyond the last count -> the overflow count (if any).

    Raises ValueError when a count has no class (beyond the head without overflow, or a gap):
    callers filter those items out first and report how many.
    """
    t = np.asarray(true_counts, dtype=np.int64).copy()
    c = np.asarray(counts, dtype=np.int64)
    if overflow:
        t = np.minimum(t, c[-1])
    bad = ~np.isin(t, c)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} true counts have no class in the head {list(c)} "
            f"(e.g. {int(t[bad][0])}); filter them out before scoring"
        )
    return t


def confusion_matrix(
    true_counts: Sequence[int], pred_counts: Sequence[int], counts: Sequence[int]
) -> np.ndarray:
    """Rows = true count, columns = predicted count, both in ``counts`` order.

    Predictions that are not one of ``counts`` (possible with RMSE-optimal decoding on a head with
    gaps) are put in the nearest count's column.
    """
    c = np.asarray(counts, dtype=np.int64)
    t_idx = np.searchsorted(c, np.asarray(true_counts, dtype=np.int64))
    p = np.asarray(pred_counts, dtype=np.int64)
    p_idx = np.abs(p[:, None] - c[None, :]).argmin(axis=1) if len(p) else np.zeros(0, dtype=np.int64)
    m = np.zeros((len(c), len(c)), dtype=np.int64)
    np.add.at(m, (t_idx, p_idx), 1)
    return m


def count_metrics(
    true_counts: Sequence[int],
    pred_counts: Sequence[int],
    counts: Sequence[int],
    raw_true: Optional[Sequence[int]] = None,
) -> dict[str, Any]:
    """abid_challenge accuracy and RMSE, plus MAE, per true class, and the confusion matrix.

    ``true_counts`` are the head's classes (:func:`head_counts`); ``raw_true``, the unclipped true
    counts (default: ``true_counts``), are what RMSE and MAE measure the error against, so that an
    overflow head does not hide how far off it is on bins beyond its last count.
    Per-class entries are keyed by the count as a string (JSON keys); classes without items get
    ``n = 0`` and ``None`` scores.
    """
    t = np.asarray(true_counts, dtype=np.int64)
    p = np.asarray(pred_counts, dtype=np.int64)
    raw = t if raw_true is None else np.asarray(raw_true, dtype=np.int64)
    if t.shape != p.shape or raw.shape != t.shape:
        raise ValueError(f"true and predicted counts differ in length: {t.shape} vs {p.shape} vs {raw.shape}")
    n = int(t.size)
    err = (p - raw).astype(np.float64)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(np.mean(p == t)) if n else 0.0,
        "rmse": float(np.sqrt(np.mean(err**2))) if n else 0.0,
        "mae": float(np.mean(np.abs(err))) if n else 0.0,
        "per_class": {},
        "confusion": confusion_matrix(t, p, counts).tolist(),
    }
    for c in counts:
        sel = t == c
        k = int(sel.sum())
        out["per_class"][str(c)] = {
            "n": k,
            "accuracy": float(np.mean(p[sel] == c)) if k else None,
            "rmse": float(np.sqrt(np.mean(err[sel] ** 2))) if k else None,
        }
    return out
