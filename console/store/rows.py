"""What the store returns: frozen rows built from the tables (see :mod:`console.store.schema`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from console.store.schema import from_db
from contract.messages import Alert, ModelReported, Stats, Status

__all__ = ["STATES", "AlertRow", "DeviceRow", "ReviewRow"]

STATES = ("new", "confirmed", "false_alarm", "cant_tell")
"""An alert's state: ``new`` until reviewed, then its latest review's decision."""


@dataclass(frozen=True)
class ReviewRow:
    alert_id: str
    decision: str
    actual_qty: Optional[int]
    reviewer: str
    note: str
    ts: datetime
    published: bool

    @classmethod
    def from_row(cls, m: Any) -> ReviewRow:
        ts = from_db(m["ts"])
        assert ts is not None
        return cls(
            alert_id=m["alert_id"],
            decision=m["decision"],
            actual_qty=m["actual_qty"],
            reviewer=m["reviewer"],
            note=m["note"],
            ts=ts,
            published=bool(m["published"]),
        )


@dataclass(frozen=True)
class AlertRow:
    alert: Alert  # the parsed contract Alert as received (the first copy is kept)
    received_ts: datetime
    has_snapshot: bool
    review: Optional[ReviewRow]  # the latest review
    state: str  # one of STATES


@dataclass(frozen=True)
class DeviceRow:
    site: str
    device: str
    online: Optional[bool]
    session: Optional[int]
    last_seen: Optional[datetime]
    status: Optional[Status]
    stats: Optional[Stats]
    model: Optional[ModelReported]

    @classmethod
    def from_row(cls, m: Any) -> DeviceRow:
        return cls(
            site=m["site"],
            device=m["device"],
            online=None if m["online"] is None else bool(m["online"]),
            session=m["session"],
            last_seen=from_db(m["last_seen"]),
            status=Status.parse(m["status"]) if m["status"] else None,
            stats=Stats.parse(m["stats"]) if m["stats"] else None,
            model=ModelReported.parse(m["model"]) if m["model"] else None,
        )
