"""Turn logits into a verdict for one bin presentation (docs/architecture.md, "Decision").

1. Calibrate: ``log_softmax(logits / temperature)`` per frame (temperature from the card).
2. Fuse the frames of one presentation: mean of the log-probabilities, renormalised.
3. ``p_expected = P(count = e)``, where ``e`` beyond the head maps to the overflow class.
4. ``p_expected < mismatch_threshold`` -> mismatch; ``>= match_threshold`` -> match; between ->
   uncertain. No expected quantity -> no_manifest (counted and reported, never alerted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from contract.card import DecisionDefaults, OutputSpec

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MATCH",
    "DEFAULT_MISMATCH",
    "Decision",
    "Thresholds",
    "Verdict",
    "calibrated_log_probs",
    "decide",
    "distribution_by_count",
    "fuse",
    "resolve_thresholds",
]

Verdict = Literal["match", "mismatch", "uncertain", "no_manifest"]
VERDICTS: tuple[str, ...] = ("match", "mismatch", "uncertain", "no_manifest")

# Used only when neither the config nor the card gives thresholds.
DEFAULT_MISMATCH = 0.1
DEFAULT_MATCH = 0.5


@dataclass(frozen=True)
class Thresholds:
    mismatch: float
    match: float
    source: str = "default"  # config | card | default

    def __post_init__(self) -> None:
        if not (0.0 <= self.mismatch <= self.match <= 1.0):
            raise ValueError(
                f"thresholds need 0 <= mismatch_threshold ({self.mismatch}) <= match_threshold "
                f"({self.match}) <= 1"
            )


def resolve_thresholds(
    card_decision: Optional[DecisionDefaults],
    mismatch_override: Optional[float] = None,
    match_override: Optional[float] = None,
) -> Thresholds:
    """Config overrides win, then the card's fitted values, then the defaults."""
    mismatch = card_decision.mismatch_threshold if card_decision else DEFAULT_MISMATCH
    match = card_decision.match_threshold if card_decision else DEFAULT_MATCH
    source = "card" if card_decision else "default"
    if mismatch_override is not None:
        mismatch, source = mismatch_override, "config"
    if match_override is not None:
        match, source = match_override, "config"
    if mismatch > match:
        # one side overridden past the other: keep the override and clamp the other to it
        if mismatch_override is not None and match_override is None:
            match = mismatch
        else:
            mismatch = match
    return Thresholds(mismatch=float(mismatch), match=float(match), source=source)


def calibrated_log_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C) logits -> (N, C) log-probabilities of ``softmax(logits / temperature)`` (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[None, :]
    z = z / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fuse(log_probs: np.ndarray) -> np.ndarray:
    """Fuse the frames of one presentation: mean log-probability per class, renormalised -> (C,)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim == 1:
        lp = lp[None, :]
    mean = lp.mean(axis=0)
    mean = mean - mean.max()
    p = np.exp(mean)
    return p / p.sum()


@dataclass
class Decision:
    verdict: Verdict
    predicted_qty: int
    distribution: list[float]
    counts: list[int]
    frames: int
    expected_qty: Optional[int] = None
    p_expected: Optional[float] = None
    reason: str = ""
    thresholds: Optional[Thresholds] = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def distribution_map(self) -> dict[str, float]:
        return {str(c): round(float(p), 6) for c, p in zip(self.counts, self.distribution, strict=False)}

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "predicted_qty": self.predicted_qty,
            "expected_qty": self.expected_qty,
            "p_expected": None if self.p_expected is None else round(self.p_expected, 6),
            "distribution": self.distribution_map,
            "frames": self.frames,
            "reason": self.reason,
        }


def decide(
    logits: np.ndarray,
    output: OutputSpec,
    expected_qty: Optional[int],
    thresholds: Thresholds,
) -> Decision:
    """Verdict for one presentation from the logits of its frames ((N, C) or (C,))."""
    lp = calibrated_log_probs(logits, output.temperature)
    if lp.shape[1] != len(output.counts):
        raise ValueError(
            f"logits have {lp.shape[1]} classes, the card's output.counts has {len(output.counts)}"
        )
    dist = fuse(lp)
    counts = list(output.counts)
    predicted = counts[int(np.argmax(dist))]
    base = {
        "predicted_qty": predicted,
        "distribution": [float(p) for p in dist],
        "counts": counts,
        "frames": int(lp.shape[0]),
        "thresholds": thresholds,
    }
    if expected_qty is None:
        return Decision(verdict="no_manifest", reason="no expected quantity for this bin", **base)
    if expected_qty < 0:
        raise ValueError(f"expected quantity must be >= 0, got {expected_qty}")
    cls = output.class_of(expected_qty)
    if cls is None:
        # The head cannot represent e (no overflow class): the model cannot judge this bin.
        return Decision(
            verdict="uncertain",
            expected_qty=expected_qty,
            reason=f"expected {expected_qty} is beyond the model's counts "
            f"(max {counts[-1]}, no overflow class)",
            **base,
        )
    p = float(dist[cls])
    if p < thresholds.mismatch:
        verdict: Verdict = "mismatch"
    elif p >= thresholds.match:
        verdict = "match"
    else:
        verdict = "uncertain"
    return Decision(verdict=verdict, expected_qty=expected_qty, p_expected=p, **base)


def distribution_by_count(d: Decision, overflow: bool) -> dict[str, float]:
    """The fused distribution keyed by count as the wire shows it (``"5+"`` for an overflow class)."""
    keys = [str(c) for c in d.counts]
    if overflow:
        keys[-1] += "+"
    return {k: round(float(p), 6) for k, p in zip(keys, d.distribution, strict=False)}
