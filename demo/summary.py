"""The demo's verdict on itself: which injected manifest errors the alerts caught, which they missed,
how many correct bins raised a false alarm, and how fast frames went from camera to broker.

Pure functions over plain data (no I/O but :func:`write_summary`), so that they are unit-tested.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["SCHEMA", "Score", "latency_ms", "percentile", "score_alerts", "write_summary"]

SCHEMA = "binwatch.demo_summary"
VERSION = 1


@dataclass
class Score:
    """Alerts against the injected truth, over the bins the agent was shown."""

    bins: int  # bins presented to the agent
    injected: int  # of them, bins whose manifest states a wrong quantity
    caught: int  # injected errors with at least one alert
    missed: int  # injected errors without an alert
    false_alarms: int  # correct manifests with an alert
    correct: int  # bins whose manifest is right
    alerts: int  # alert messages received (duplicates included)
    unique_alerts: int  # distinct alert_id
    unknown_bins: int  # alerts for bins that were not presented (should be 0)
    caught_bins: list[str] = field(default_factory=list)
    missed_bins: list[str] = field(default_factory=list)
    false_alarm_bins: list[str] = field(default_factory=list)

    @property
    def recall(self) -> Optional[float]:
        return self.caught / self.injected if self.injected else None

    @property
    def false_alarm_rate(self) -> Optional[float]:
        return self.false_alarms / self.correct if self.correct else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recall"] = self.recall
        d["false_alarm_rate"] = self.false_alarm_rate
        return d


def score_alerts(
    alerts: Iterable[Mapping[str, Any]], presented: Iterable[str], wrong: Iterable[str]
) -> Score:
    """Score ``alerts`` (dicts with ``bin_id`` and ``alert_id``) against the bins ``presented`` and
    the ``wrong`` ones among them (injected errors). A bin alerted twice counts once."""
    shown = set(presented)
    bad = set(wrong) & shown
    alerts = list(alerts)
    flagged = {str(a["bin_id"]) for a in alerts}
    caught = sorted(flagged & bad)
    false = sorted((flagged & shown) - bad)
    return Score(
        bins=len(shown),
        injected=len(bad),
        caught=len(caught),
        missed=len(bad) - len(caught),
        false_alarms=len(false),
        correct=len(shown) - len(bad),
        alerts=len(alerts),
        unique_alerts=len({str(a.get("alert_id", i)) for i, a in enumerate(alerts)}),
        unknown_bins=len(flagged - shown),
        caught_bins=caught,
        missed_bins=sorted(bad - flagged),
        false_alarm_bins=false,
    )


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q`` (0..100) percentile with linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_ms(pairs: Iterable[tuple[float, float]]) -> dict[str, Optional[float]]:
    """p50/p95/max of ``received - frame_ts`` in milliseconds over (frame_ts, received) pairs."""
    ms = [(rx - ts) * 1000.0 for ts, rx in pairs]
    p50, p95 = percentile(ms, 50), percentile(ms, 95)
    return {
        "n": len(ms),
        "p50": None if p50 is None else round(p50, 1),
        "p95": None if p95 is None else round(p95, 1),
        "max": round(max(ms), 1) if ms else None,
    }


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """Write ``summary`` as JSON (schema, version first), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"schema": SCHEMA, "version": VERSION, **summary}, indent=2) + "\n"
    write_atomic(path, text.encode(), mode=0o644)
