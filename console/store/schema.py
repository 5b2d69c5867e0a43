"""The console's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Timestamps are stored as naive UTC (``DateTime`` without a zone), so that both backends compare and
order them the same way; :func:`to_db` and :func:`from_db` convert at the edge. Whole documents
(the alert, the latest status, stats, model state, each review) are kept as their contract JSON
text: the columns beside them are only what queries filter or sort on.

``meta`` holds ``schema_version``: a future change compares it on open and migrates.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["SCHEMA_VERSION", "from_db", "metadata", "to_db"]

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(36), nullable=False, unique=True),
    Column("site", String(128), nullable=False),
    Column("device", String(128), nullable=False),
    Column("bin_id", String(128), nullable=False),
    Column("received_ts", DateTime, nullable=False),
    Column("state", String(16), nullable=False, default="new"),
    Column("review_id", Integer, nullable=True),  # the latest review (reviews.id)
    Column("snapshot_sha256", String(64), nullable=True),  # what the alert says the JPEG hashes to
    Column("snapshot_size", BigInteger, nullable=True),
    Column("payload", Text, nullable=False),
)
Index("alerts_received", alerts.c.received_ts, alerts.c.id)
Index("alerts_site_device", alerts.c.site, alerts.c.device, alerts.c.received_ts)
Index("alerts_state", alerts.c.state, alerts.c.received_ts)
Index("alerts_bin", alerts.c.bin_id, alerts.c.received_ts)

# A snapshot may come before its alert: no foreign key to alerts.
snapshots = Table(
    "snapshots",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received_ts", DateTime, nullable=False),
)

reviews = Table(
    "reviews",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(36), ForeignKey("alerts.alert_id"), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("actual_qty", Integer, nullable=True),
    Column("reviewer", String(128), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("ts", DateTime, nullable=False),
    Column("published", Boolean, nullable=False, default=False),
    Column("published_ts", DateTime, nullable=True),
    Column("payload", Text, nullable=False),
)
Index("reviews_alert", reviews.c.alert_id, reviews.c.id)
Index("reviews_unpublished", reviews.c.published, reviews.c.id)

devices = Table(
    "devices",
    metadata,
    Column("site", String(128), primary_key=True),
    Column("device", String(128), primary_key=True),
    Column("online", Boolean, nullable=True),
    Column("session", BigInteger, nullable=True),
    Column("online_session", BigInteger, nullable=True),  # the session of the last "online" status
    Column("last_seen", DateTime, nullable=True),
    Column("status", Text, nullable=True),
    Column("stats", Text, nullable=True),
    Column("model", Text, nullable=True),
)

invalid = Table(
    "invalid",
    metadata,
    Column("reason", String(128), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(32), nullable=False),
    Column("created_ts", DateTime, nullable=False),
)


def to_db(ts: Optional[datetime]) -> Optional[datetime]:
    """Aware (or naive UTC) -> naive UTC for a column."""
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
    return ts


def from_db(ts: Optional[datetime]) -> Optional[datetime]:
    """A column's naive UTC -> aware UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
