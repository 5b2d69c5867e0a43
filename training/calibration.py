"""Temperature scaling (Guo et al., 2017) and calibration error.

The model's logits are divided by one scalar ``T`` before the softmax. ``T`` is fitted on
validation logits by minimising the negative log-likelihood; it changes confidences, never the
argmax. The negative log-likelihood is convex in ``beta = 1 / T`` (log-sum-exp of a linear function
minus a linear function), so a bounded scalar search over ``beta`` finds the global optimum.

Expected calibration error (ECE): split the top-class confidences into 15 equal-width bins on
(0, 1]; ECE = sum over bins of (bin size / n) * |accuracy(bin) - mean confidence(bin)|.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from training.metrics import log_softmax, softmax

log = logging.getLogger(__name__)

__all__ = ["N_BINS", "calibration_summary", "ece", "fit_temperature", "nll", "reliability"]

N_BINS = 15
T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of class indices ``labels`` under ``softmax(logits / T)``."""
    lp = log_softmax(logits, temperature)
    y = np.asarray(labels, dtype=np.int64)
    return float(-lp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising validation NLL (1.0 when there is nothing to fit)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y):
        raise ValueError(f"logits must be (n, classes) matching labels; got {z.shape} and {y.shape}")
    if len(y) == 0:
        log.warning("no validation logits: temperature left at 1.0")
        return 1.0
    res = minimize_scalar(
        lambda beta: nll(z * beta, y),
        bounds=(1.0 / T_MAX, 1.0 / T_MIN),
        method="bounded",
        options={"xatol": 1e-6},
    )
    t = float(1.0 / res.x)
    if nll(z, y, t) > nll(z, y, 1.0):  # the bounded search never should lose to T = 1; be safe
        t = 1.0
    log.info("temperature %.4f (NLL %.4f -> %.4f on %d items)", t, nll(z, y), nll(z, y, t), len(y))
    return t


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Per-bin confidence, accuracy and size (the reliability diagram's data) and the ECE."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == y).astype(np.float64) if len(p) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot happen after softmax
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    size = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(size > 0, sum_conf / size, np.nan)
        mean_acc = np.where(size > 0, sum_acc / size, np.nan)
    n = max(len(y), 1)
    gap = np.where(size > 0, np.abs(mean_acc - mean_conf), 0.0)
    return {
        "edges": edges.tolist(),
        "confidence": [None if np.isnan(v) else float(v) for v in mean_conf],
        "accuracy": [None if np.isnan(v) else float(v) for v in mean_acc],
        "count": size.tolist(),
        "ece": float(np.sum(size / n * gap)),
    }


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error of top-class confidences (15 equal-width bins by default)."""
    return reliability(probs, labels, n_bins)["ece"]


def calibration_summary(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """ECE and NLL before/after ``temperature`` on the evaluated set, plus the reliability data."""
    before = reliability(softmax(logits), labels)
    after = reliability(softmax(logits, temperature), labels)
    return {
        "temperature": float(temperature),
        "ece_uncalibrated": before["ece"],
        "ece": after["ece"],
        "nll_uncalibrated": nll(logits, labels) if len(labels) else None,
        "nll": nll(logits, labels, temperature) if len(labels) else None,
        "reliability_uncalibrated": before,
        "reliability": after,
    }
