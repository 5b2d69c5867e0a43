"""Decision thresholds for the fused views, fitted on validation bins.

The card's thresholds were fitted per image (training's validation split) for a 1% false-alarm
rate. The agent fuses several views of a bin, which makes ``p_expected`` of a correct manifest
steadier, so a per-image threshold is more cautious than it needs to be. The demo runs the agent once
on validation bins (their own seed, never trained on, never the held-out bins it scores) and takes
the threshold that keeps the false alarms on their correct manifests at or below the target, the
way ``binwatch eval`` does per image (docs/evaluation.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

log = logging.getLogger(__name__)

__all__ = ["fit_threshold", "fit_thresholds"]


def fit_threshold(p_correct: Sequence[float], target: float) -> Optional[float]:
    """The largest threshold ``t`` among the observed values with ``#{p < t} / n <= target``: an
    alert is ``p_expected < t``, so the measured false-alarm rate never exceeds ``target``.
    None without values."""
    if not p_correct:
        return None
    s = sorted(p_correct)
    k = math.floor(target * len(s) + 1e-9)  # at most k correct manifests may fall below t
    return s[min(k, len(s) - 1)]


def fit_thresholds(
    verdicts: Iterable[Mapping[str, Any]],
    wrong: Iterable[str],
    *,
    false_alarm_rate: float = 0.01,
    match_false_alarm_rate: float = 0.05,
) -> dict[str, Any]:
    """Fit (mismatch, match) thresholds on the fused ``p_expected`` of the verdicts whose manifest is
    right; report the recall they reach on the wrong ones (all on the validation bins)."""
    bad = set(wrong)
    rows = [v for v in verdicts if isinstance(v.get("p_expected"), (int, float))]
    ok = [float(v["p_expected"]) for v in rows if v["bin_id"] not in bad]
    err = [float(v["p_expected"]) for v in rows if v["bin_id"] in bad]
    mismatch = fit_threshold(ok, false_alarm_rate)
    match = fit_threshold(ok, match_false_alarm_rate)
    if mismatch is None or match is None:
        raise ValueError("no verdict with a p_expected on a correct manifest: nothing to fit thresholds on")
    match = max(match, mismatch)
    return {
        "mismatch_threshold": mismatch,
        "match_threshold": match,
        "false_alarm_rate": false_alarm_rate,
        "n_correct": len(ok),
        "n_wrong": len(err),
        "false_alarms": sum(p < mismatch for p in ok),
        "recall": (sum(p < mismatch for p in err) / len(err)) if err else None,
    }
