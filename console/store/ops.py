"""Writes on one open transaction: :class:`StoreBatch`. ``ConsoleStore``'s write methods each run one
batch of one operation; the ingest runs many messages through one batch (one commit) for speed.

A method either raises before it writes anything (ValueError, KeyError) or writes completely, so
a caller may catch those and go on with the same batch.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import Connection, Insert, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from console.images import ImageStore
from console.store import schema as t
from console.store.rows import ReviewRow
from contract.base import utcnow
from contract.messages import Alert, ModelReported, Stats, Status
from contract.reviews import Review

__all__ = ["ALERT_ID_RE", "SNAPSHOT_SHA256", "StoreBatch"]

log = logging.getLogger(__name__)

ALERT_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

SNAPSHOT_SHA256 = "snapshot_sha256"
"""The invalid-message reason of a snapshot whose bytes do not hash to its alert's ``sha256``."""


def upsert_insert(conn: Connection, table: Table) -> Insert:
    """The dialect's INSERT that knows ON CONFLICT (SQLite and PostgreSQL both do)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@dataclass(frozen=True)
class _Statements:
    """The ingest's hot statements, built once per dialect and run with parameters (building a
    statement with literal values per message costs more than running it)."""

    add_alert: Any
    snapshot_of: Any
    alert_snapshot: Any
    add_snapshot: Any
    count_invalid: Any


@functools.cache
def _statements(dialect: str) -> _Statements:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    aid = bindparam("aid")
    invalid = insert(t.invalid)
    return _Statements(
        add_alert=insert(t.alerts)
        .on_conflict_do_nothing(index_elements=["alert_id"])
        .returning(t.alerts.c.id),
        snapshot_of=select(t.snapshots.c.sha256, t.snapshots.c.size).where(t.snapshots.c.alert_id == aid),
        alert_snapshot=select(t.alerts.c.snapshot_sha256, t.alerts.c.snapshot_size).where(
            t.alerts.c.alert_id == aid
        ),
        add_snapshot=t.snapshots.insert(),
        count_invalid=invalid.on_conflict_do_update(
            index_elements=["reason"], set_={"n": t.invalid.c.n + invalid.excluded.n}
        ),
    )


class StoreBatch:
    """Write operations on one connection inside one transaction (committed by the caller)."""

    def __init__(self, conn: Connection, images: ImageStore) -> None:
        self.conn = conn
        self.images = images
        self.sql = _statements(conn.dialect.name)

    # -- alerts and snapshots ----------------------------------------------------------------
    def add_alert(self, alert: Alert, received_ts: Optional[datetime] = None) -> bool:
        """Store ``alert`` unless its ``alert_id`` is stored already (then False: a re-delivery).
        A snapshot that came first and does not match the alert's sha256 and size (or the alert
        names no snapshot) is dropped and counted as ``snapshot_sha256``."""
        snap = alert.snapshot
        sha = snap.sha256 if snap is not None else None
        size = snap.size if snap is not None else None
        row = {
            "alert_id": alert.alert_id,
            "site": alert.site,
            "device": alert.device,
            "bin_id": alert.bin_id,
            "received_ts": t.to_db(received_ts or utcnow()),
            "state": "new",
            "snapshot_sha256": sha,
            "snapshot_size": size,
            "payload": alert.to_json_bytes().decode("utf-8"),
        }
        if self.conn.execute(self.sql.add_alert, row).first() is None:
            return False
        got = self.conn.execute(self.sql.snapshot_of, {"aid": alert.alert_id}).first()
        if got is not None and (sha is None or got.sha256 != sha or (size is not None and got.size != size)):
            log.warning("dropping the early snapshot of alert %s: the alert disowns it", alert.alert_id)
            self.conn.execute(t.snapshots.delete().where(t.snapshots.c.alert_id == alert.alert_id))
            self.images.delete(alert.alert_id)
            self.count_invalid(SNAPSHOT_SHA256)
        return True

    def add_snapshot(self, alert_id: str, jpeg: bytes, *, require_sha256: bool = False) -> bool:
        """Keep the JPEG of ``alert_id`` (False when one is kept already). When the alert is known,
        the bytes must match its ``snapshot`` sha256 (and size): ValueError otherwise. With
        ``require_sha256`` (the ingest) a known alert that names no snapshot takes none either. A
        JPEG whose alert is unknown yet is kept for it (and dropped if the alert disowns it)."""
        if not isinstance(alert_id, str) or not ALERT_ID_RE.match(alert_id):
            raise ValueError(f"snapshot alert id {alert_id!r} is not a lower-case UUID")
        if not jpeg:
            raise ValueError(f"snapshot of alert {alert_id} is empty")
        sha = hashlib.sha256(jpeg).hexdigest()
        if self.conn.execute(self.sql.snapshot_of, {"aid": alert_id}).first():
            return False
        known = self.conn.execute(self.sql.alert_snapshot, {"aid": alert_id}).first()
        if known is not None:
            if known.snapshot_sha256 is None and require_sha256:  # a forged or stray JPEG
                raise ValueError(f"alert {alert_id} names no snapshot (a JPEG for it is refused)")
            if known.snapshot_sha256 is not None and known.snapshot_sha256 != sha:
                raise ValueError(
                    f"snapshot of alert {alert_id} hashes to {sha}, the alert says {known.snapshot_sha256}"
                )
            if known.snapshot_size is not None and known.snapshot_size != len(jpeg):
                raise ValueError(
                    f"snapshot of alert {alert_id} is {len(jpeg)} bytes, the alert says {known.snapshot_size}"
                )
        self.images.put(alert_id, jpeg)
        snap_row = {"alert_id": alert_id, "sha256": sha, "size": len(jpeg), "received_ts": t.to_db(utcnow())}
        self.conn.execute(self.sql.add_snapshot, snap_row)
        return True

    # -- reviews -----------------------------------------------------------------------------
    def add_review(self, review: Review) -> ReviewRow:
        """Append ``review`` to the alert's history and make it the latest. KeyError when the alert
        is unknown; ValueError when the review names another site, device or bin than the alert."""
        row = self.conn.execute(
            select(t.alerts.c.site, t.alerts.c.device, t.alerts.c.bin_id).where(
                t.alerts.c.alert_id == review.alert_id
            )
        ).first()
        if row is None:
            raise KeyError(f"no alert {review.alert_id} to review")
        if (row.site, row.device, row.bin_id) != (review.site, review.device, review.bin_id):
            raise ValueError(
                f"review of alert {review.alert_id} names {review.site}/{review.device} bin {review.bin_id}, "
                f"the alert is {row.site}/{row.device} bin {row.bin_id}"
            )
        values: dict[str, Any] = {
            "alert_id": review.alert_id,
            "decision": review.decision,
            "actual_qty": review.actual_qty,
            "reviewer": review.reviewer,
            "note": review.note,
            "ts": t.to_db(review.ts),
            "published": False,
            "payload": review.to_json_bytes().decode("utf-8"),
        }
        rid = self.conn.execute(t.reviews.insert().values(**values).returning(t.reviews.c.id)).scalar_one()
        self.conn.execute(
            update(t.alerts)
            .where(t.alerts.c.alert_id == review.alert_id)
            .values(review_id=rid, state=review.decision)
        )
        return ReviewRow.from_row({**values, "ts": review.ts})

    def mark_review_published(self, alert_id: str, ts: datetime) -> None:
        self.conn.execute(
            update(t.reviews)
            .where(
                t.reviews.c.alert_id == alert_id,
                t.reviews.c.ts == t.to_db(ts),
                t.reviews.c.published.is_(False),
            )
            .values(published=True, published_ts=t.to_db(utcnow()))
        )

    # -- devices -----------------------------------------------------------------------------
    def update_device(
        self,
        site: str,
        device: str,
        *,
        status: Optional[Status] = None,
        stats: Optional[Stats] = None,
        model: Optional[ModelReported] = None,
        seen: Optional[datetime] = None,
    ) -> None:
        """Record what a device reported. An ``offline`` status (the last will) whose session is
        older than the last ``online`` one seen is ignored (the device came back meanwhile)."""
        d = t.devices
        self.conn.execute(
            upsert_insert(self.conn, d).values(site=site, device=device).on_conflict_do_nothing()
        )
        key = (d.c.site == site, d.c.device == device)
        row = self.conn.execute(select(d).where(*key).with_for_update()).mappings().one()
        values: dict[str, Any] = {}
        if status is not None and not self._stale_will(status, row["online_session"]):
            values.update(status=status.to_json_bytes().decode("utf-8"), session=status.session)
            values["online"] = status.state == "online"
            if status.state == "online":
                values["online_session"] = max(status.session, row["online_session"] or 0)
        if stats is not None:
            values["stats"] = stats.to_json_bytes().decode("utf-8")
        if model is not None:
            values["model"] = model.to_json_bytes().decode("utf-8")
        if seen is not None:
            seen_db = t.to_db(seen)
            if row["last_seen"] is None or seen_db > row["last_seen"]:
                values["last_seen"] = seen_db
        if values:
            self.conn.execute(update(d).where(*key).values(**values))

    @staticmethod
    def _stale_will(status: Status, online_session: Optional[int]) -> bool:
        stale = status.state == "offline" and online_session is not None and status.session < online_session
        if stale:
            log.info(
                "ignoring an offline will of session %d (online in session %d)",
                status.session,
                online_session,
            )
        return stale

    # -- counters ----------------------------------------------------------------------------
    def count_invalid(self, reason: str, n: int = 1) -> None:
        reason = (reason or "unknown")[:128]
        self.conn.execute(self.sql.count_invalid, {"reason": reason, "n": n})
