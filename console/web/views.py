"""What the pages show, computed from the store's rows: no HTTP here, only plain values for the
templates (feed rows, the distribution chart's bars, the fleet table), so that each is testable alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

log = logging.getLogger(__name__)

__all__ = [
    "STATES",
    "Bar",
    "FeedFilters",
    "ago",
    "distribution_bars",
    "fleet_row",
    "fmt_ts",
    "state_label",
]

# review state -> what the pages call it
STATES: dict[str, str] = {
    "new": "new",
    "confirmed": "mismatch confirmed",
    "false_alarm": "false alarm",
    "cant_tell": "can't tell",
}
DECISIONS = ("confirmed", "false_alarm", "cant_tell")


def state_label(state: str) -> str:
    return STATES.get(state, state)


def fmt_ts(ts: Optional[datetime]) -> str:
    """``2026-11-30 12:34:56Z`` (UTC), or an empty string."""
    if ts is None:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(ts: Optional[datetime]) -> str:
    if ts is None:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def ago(ts: Optional[datetime], now: Optional[datetime] = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``; ``never`` for None."""
    if ts is None:
        return "never"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    seconds = max(0.0, ((now or datetime.now(timezone.utc)) - ts).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


@dataclass(frozen=True)
class FeedFilters:
    """The feed's filters (query parameters ``site``, ``device``, ``state``, ``bin``)."""

    site: str = ""
    device: str = ""
    state: str = ""
    bin_id: str = ""
    before: Optional[datetime] = None  # an older page: alerts received before this time

    @classmethod
    def from_query(cls, query: Any) -> FeedFilters:
        def get(name: str) -> str:
            return str(query.get(name, "") or "").strip()[:128]

        state = get("state")
        try:
            text = get("before").replace("Z", "+00:00")  # Python 3.10 reads no "Z"
            before: Optional[datetime] = datetime.fromisoformat(text) if text else None
        except ValueError:
            before = None
        if before is not None and before.tzinfo is None:
            before = before.replace(tzinfo=timezone.utc)
        return cls(get("site"), get("device"), state if state in STATES else "", get("bin"), before)

    def store_kwargs(self) -> dict[str, Any]:
        return {
            "site": self.site or None,
            "device": self.device or None,
            "state": self.state or None,
            "bin_id": self.bin_id or None,
            "before": self.before,
        }

    def older(self, rows: list[Any]) -> Optional[str]:
        """The query of the next older page after ``rows`` (None when this page is the last)."""
        if not rows:
            return None
        from dataclasses import replace

        return replace(self, before=rows[-1].received_ts).query()

    def newest(self) -> str:
        from dataclasses import replace

        return replace(self, before=None).query()

    def matches(self, row: Any) -> bool:
        """Whether an :class:`AlertRow` passes these filters (the live feed decides per new alert)."""
        alert = row.alert
        return (
            (not self.site or alert.site == self.site)
            and (not self.device or alert.device == self.device)
            and (not self.state or row.state == self.state)
            and (not self.bin_id or alert.bin_id == self.bin_id)
            and (self.before is None or row.received_ts < self.before)
        )

    def query(self) -> str:
        from urllib.parse import urlencode

        pairs = {
            "site": self.site,
            "device": self.device,
            "state": self.state,
            "bin": self.bin_id,
            "before": iso(self.before),
        }
        return urlencode({k: v for k, v in pairs.items() if v})


@dataclass(frozen=True)
class Bar:
    """One bar of the count distribution chart (SVG coordinates precomputed)."""

    label: str
    p: float
    y: int
    width: float
    expected: bool
    predicted: bool


BAR_H = 22
CHART_W = 300  # bar area width in SVG units


def _count_of(label: str) -> int:
    return int(label.rstrip("+"))


def _class_of(labels: list[str], qty: int) -> Optional[str]:
    """The distribution key that holds ``qty`` (an overflow key ``5+`` holds 5 and more)."""
    for label in labels:
        if label.endswith("+") and qty >= _count_of(label):
            return label
        if label == str(qty):
            return label
    return None


def distribution_bars(distribution: dict[str, float], expected: int, predicted: int) -> list[Bar]:
    """Bars in count order, the expected and the predicted class marked."""
    labels = sorted(distribution, key=lambda k: (_count_of(k), k.endswith("+")))
    exp_label = _class_of(labels, expected)
    pred_label = _class_of(labels, predicted)
    return [
        Bar(
            label=label,
            p=float(distribution[label]),
            y=i * BAR_H,
            width=round(max(0.0, min(1.0, float(distribution[label]))) * CHART_W, 1),
            expected=label == exp_label,
            predicted=label == pred_label,
        )
        for i, label in enumerate(labels)
    ]


def fleet_row(dev: Any, now: Optional[datetime] = None) -> dict[str, Any]:
    """One device of the fleet page (a :class:`DeviceRow`) as display values."""
    status, stats, model = dev.status, dev.stats, dev.model
    online = "unknown" if dev.online is None else ("online" if dev.online else "offline")
    running = ""
    if status is not None and status.model is not None:
        m = status.model
        running = f"{m.name} v{m.version} ({m.precision}, {m.backend})"
    update = ""
    if model is not None:
        update = f"v{model.version} {model.state}" + (f": {model.detail}" if model.detail else "")
    cameras = []
    if status is not None:
        cameras = [f"{name} {cam.state}" for name, cam in sorted(status.cameras.items())]
    return {
        "site": dev.site,
        "device": dev.device,
        "online": online,
        "agent_version": status.agent_version if status is not None else "",
        "running": running,
        "model_update": update,
        "update_state": model.state if model is not None else "",
        "fps": f"{stats.fps:.1f}" if stats is not None else "",
        "outbox": str(stats.outbox_depth) if stats is not None else "",
        "alerts_published": str(stats.alerts_published) if stats is not None else "",
        "invalid": sum(stats.invalid_messages.values()) if stats is not None else 0,
        "cameras": ", ".join(cameras),
        "last_seen": ago(dev.last_seen, now),
        "last_seen_iso": iso(dev.last_seen),
        "session": "" if dev.session is None else str(dev.session),
    }
