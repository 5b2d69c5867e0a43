"""``ConsoleStore``: alerts, snapshots, reviews, devices, counters and users of the operator console.

SQLite (the default; WAL, one writer at a time, readers never blocked) or PostgreSQL
(``postgresql+psycopg://user:pass@host/db``), through SQLAlchemy 2 Core. Thread-safe: the ingest
thread writes while web requests read; every method runs its own transaction. JPEGs live in an
:class:`~console.images.ImageStore`; the database knows which alerts have one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from console.images import ImageStore
from console.store import schema as t
from console.store.ops import StoreBatch
from console.store.rows import STATES, AlertRow, DeviceRow, ReviewRow
from contract.base import utcnow
from contract.messages import Alert, ModelReported, Stats, Status
from contract.reviews import Review

__all__ = ["ConsoleStore"]

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
_WRITE = "binwatch_write"


def _sqlite_engine(url: str) -> Engine:
    """A SQLite engine in WAL mode whose write transactions take the write lock up front
    (``BEGIN IMMEDIATE``), so two writers wait for each other instead of failing."""
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the begin hook below emits BEGIN itself
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000", "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


class ConsoleStore:
    """See the module doc. Open with :meth:`open`; writes go through :meth:`batch` (one commit)."""

    def __init__(self, engine: Engine, images: ImageStore) -> None:
        self.engine = engine
        self.images = images
        self.backend = engine.dialect.name
        self._write_engine = engine.execution_options(**{_WRITE: True})
        self._wlock = threading.Lock() if self.backend == "sqlite" else None

    @classmethod
    def open(cls, url: str, images: ImageStore) -> ConsoleStore:
        """``sqlite:///path.db`` or ``postgresql+psycopg://...``; the schema is created if missing."""
        backend = make_url(url).get_backend_name()
        if backend == "sqlite":
            engine = _sqlite_engine(url)
        elif backend == "postgresql":
            engine = create_engine(url, pool_pre_ping=True)
        else:
            raise ValueError(
                f"console database URL {url!r}: use sqlite:///path.db or postgresql+psycopg://..."
            )
        store = cls(engine, images)
        try:
            store.create_schema()
        except Exception:
            engine.dispose()
            raise
        return store

    def create_schema(self) -> None:
        """Create the tables that are missing and record (or check) the schema version."""
        with self.batch() as b:
            t.metadata.create_all(b.conn)
            got = b.conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema_version")).scalar()
            if got is None:
                b.conn.execute(t.meta.insert().values(key="schema_version", value=str(t.SCHEMA_VERSION)))
            elif int(got) > t.SCHEMA_VERSION:
                raise RuntimeError(
                    f"the console database has schema version {got}, newer than this binwatch reads "
                    f"({t.SCHEMA_VERSION}): upgrade binwatch"
                )

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(t.meta.c.value).where(t.meta.c.key == "schema_version")).scalar_one()
            )

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        """One write transaction: committed when the block ends, rolled back on an exception."""
        if self._wlock is not None:
            self._wlock.acquire()
        try:
            with self._write_engine.begin() as conn:
                yield StoreBatch(conn, self.images)
        finally:
            if self._wlock is not None:
                self._wlock.release()

    # -- alerts and snapshots ----------------------------------------------------------------
    def add_alert(self, alert: Alert, received_ts: Optional[datetime] = None) -> bool:
        with self.batch() as b:
            return b.add_alert(alert, received_ts)

    def add_snapshot(self, alert_id: str, jpeg: bytes, *, require_sha256: bool = False) -> bool:
        with self.batch() as b:
            return b.add_snapshot(alert_id, jpeg, require_sha256=require_sha256)

    def prune_orphan_snapshots(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Drop JPEGs whose alert never came (received more than ``older_than`` ago): a bound on
        what stray or hostile snapshot messages can leave on disk. Returns how many went."""
        s, a = t.snapshots, t.alerts
        cutoff = t.to_db(utcnow() - older_than)
        orphan = s.c.alert_id.not_in(select(a.c.alert_id).where(a.c.alert_id == s.c.alert_id))
        with self.batch() as b:
            ids = list(b.conn.execute(select(s.c.alert_id).where(orphan, s.c.received_ts < cutoff)).scalars())
            if ids:
                b.conn.execute(s.delete().where(s.c.alert_id.in_(ids)))
        for alert_id in ids:
            self.images.delete(alert_id)
        if ids:
            log.info("dropped %d snapshot(s) whose alert never came", len(ids))
        return len(ids)

    def snapshot(self, alert_id: str) -> Optional[bytes]:
        with self.engine.connect() as conn:
            known = conn.execute(
                select(t.snapshots.c.alert_id).where(t.snapshots.c.alert_id == alert_id)
            ).first()
        return self.images.get(alert_id) if known else None

    def _alert_query(self) -> Any:
        a, r, s = t.alerts, t.reviews, t.snapshots
        cols = [
            a.c.id.label("row_id"),
            a.c.payload,
            a.c.received_ts,
            a.c.state,
            s.c.alert_id.label("snap"),
            r.c.alert_id,
            r.c.decision,
            r.c.actual_qty,
            r.c.reviewer,
            r.c.note,
            r.c.ts,
            r.c.published,
        ]
        joined = a.outerjoin(s, s.c.alert_id == a.c.alert_id).outerjoin(r, r.c.id == a.c.review_id)
        return select(*cols).select_from(joined)

    @staticmethod
    def _alert_row(m: Any) -> AlertRow:
        received = t.from_db(m["received_ts"])
        assert received is not None
        return AlertRow(
            alert=Alert.parse(m["payload"]),
            received_ts=received,
            has_snapshot=m["snap"] is not None,
            review=ReviewRow.from_row(m) if m["decision"] is not None else None,
            state=m["state"],
        )

    def alerts(
        self,
        *,
        site: Optional[str] = None,
        device: Optional[str] = None,
        state: Optional[str] = None,
        bin_id: Optional[str] = None,
        limit: int = 50,
        before: Optional[datetime] = None,
    ) -> list[AlertRow]:
        """Newest first by ``received_ts``; ``before`` pages back (received strictly earlier)."""
        a = t.alerts
        if state is not None and state not in STATES:
            raise ValueError(f"state {state!r} is not one of {', '.join(STATES)}")
        q = self._alert_query()
        for col, value in ((a.c.site, site), (a.c.device, device), (a.c.state, state), (a.c.bin_id, bin_id)):
            if value is not None:
                q = q.where(col == value)
        if before is not None:
            q = q.where(a.c.received_ts < t.to_db(before))
        q = q.order_by(a.c.received_ts.desc(), a.c.id.desc()).limit(max(1, min(int(limit), MAX_LIMIT)))
        with self.engine.connect() as conn:
            return [self._alert_row(m) for m in conn.execute(q).mappings()]

    def count_alerts(
        self,
        *,
        site: Optional[str] = None,
        device: Optional[str] = None,
        state: Optional[str] = None,
        bin_id: Optional[str] = None,
    ) -> int:
        """How many alerts match (the same filters as :meth:`alerts`)."""
        a = t.alerts
        q = select(func.count()).select_from(a)
        for col, value in ((a.c.site, site), (a.c.device, device), (a.c.state, state), (a.c.bin_id, bin_id)):
            if value is not None:
                q = q.where(col == value)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def alert(self, alert_id: str) -> Optional[AlertRow]:
        with self.engine.connect() as conn:
            m = conn.execute(self._alert_query().where(t.alerts.c.alert_id == alert_id)).mappings().first()
        return self._alert_row(m) if m is not None else None

    # -- reviews -----------------------------------------------------------------------------
    def add_review(self, review: Review) -> ReviewRow:
        with self.batch() as b:
            return b.add_review(review)

    def reviews(self, alert_id: str) -> list[ReviewRow]:
        r = t.reviews
        with self.engine.connect() as conn:
            rows = conn.execute(select(r).where(r.c.alert_id == alert_id).order_by(r.c.id)).mappings().all()
        return [ReviewRow.from_row(m) for m in rows]

    def unpublished_reviews(self) -> list[Review]:
        r = t.reviews
        with self.engine.connect() as conn:
            payloads = conn.execute(
                select(r.c.payload).where(r.c.published.is_(False)).order_by(r.c.id)
            ).scalars()
            return [Review.parse(p) for p in payloads]

    def mark_review_published(self, alert_id: str, ts: datetime) -> None:
        with self.batch() as b:
            b.mark_review_published(alert_id, ts)

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
        with self.batch() as b:
            b.update_device(site, device, status=status, stats=stats, model=model, seen=seen)

    def devices(self) -> list[DeviceRow]:
        d = t.devices
        with self.engine.connect() as conn:
            rows = conn.execute(select(d).order_by(d.c.site, d.c.device)).mappings().all()
        return [DeviceRow.from_row(m) for m in rows]

    # -- counters ----------------------------------------------------------------------------
    def count_invalid(self, reason: str, n: int = 1) -> None:
        with self.batch() as b:
            b.count_invalid(reason, n)

    def invalid_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.invalid.c.reason, t.invalid.c.n).order_by(t.invalid.c.reason)).all()
        return {reason: int(n) for reason, n in rows}

    # -- users -------------------------------------------------------------------------------
    def add_user(self, name: str, password_hash: str, *, role: str = "reviewer") -> None:
        """ValueError when ``name`` exists already (or a field is empty)."""
        if not name or not password_hash or not role:
            raise ValueError("a user needs a name, a password hash and a role")
        try:
            with self.batch() as b:
                b.conn.execute(
                    t.users.insert().values(
                        name=name, password_hash=password_hash, role=role, created_ts=t.to_db(utcnow())
                    )
                )
        except IntegrityError as e:
            raise ValueError(f"user {name!r} exists already") from e

    def set_password(self, name: str, password_hash: str) -> None:
        """Replace a user's password hash; KeyError when there is no such user."""
        with self.batch() as b:
            done = b.conn.execute(
                t.users.update().where(t.users.c.name == name).values(password_hash=password_hash)
            )
        if done.rowcount != 1:
            raise KeyError(f"no user {name!r}")

    def remove_user(self, name: str) -> None:
        """Delete a login (its reviews keep the name); KeyError when there is no such user."""
        with self.batch() as b:
            done = b.conn.execute(t.users.delete().where(t.users.c.name == name))
        if done.rowcount != 1:
            raise KeyError(f"no user {name!r}")

    def user(self, name: str) -> Optional[tuple[str, str]]:
        """``(password_hash, role)`` or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.users.c.password_hash, t.users.c.role).where(t.users.c.name == name)
            ).first()
        return (row.password_hash, row.role) if row is not None else None

    # -- export ------------------------------------------------------------------------------
    def reviewed_for_export(self) -> list[tuple[AlertRow, ReviewRow]]:
        """Alerts whose latest review is ``confirmed`` or ``false_alarm`` and that have a snapshot,
        oldest stored first (``cant_tell`` and unreviewed alerts are left out)."""
        q = (
            self._alert_query()
            .where(
                t.reviews.c.decision.in_(("confirmed", "false_alarm")), t.snapshots.c.alert_id.is_not(None)
            )
            .order_by(t.alerts.c.id)
        )
        with self.engine.connect() as conn:
            rows = [self._alert_row(m) for m in conn.execute(q).mappings()]
        return [(row, row.review) for row in rows if row.review is not None]
