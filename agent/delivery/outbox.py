"""The durable outbox: every alert is stored here before it is published, deleted on PUBACK.

SQLite (WAL, ``synchronous=FULL``) in the state directory's ``agent.db`` (shared with
:class:`agent.delivery.state.AgentState`). Rows keep their insertion order (``id`` never repeats, even after
deletes). The outbox is bounded by rows and payload bytes: when a new row would exceed a bound the
oldest rows are dropped, counted in a persisted counter (with the reason) and logged as a WARNING.

Snapshot rows (an alert's JPEG on ``alert/snapshot/<alert_id>``, stored with the alert in one
transaction by :meth:`Outbox.put_alert`) are a class of their own: they count against their own
byte budget (``snapshot_max_bytes``), never against ``max_rows``/``max_bytes``, so a picture never
pushes an alert out; past the budget the oldest snapshot rows go first (``snapshots_dropped``).
``depth``/``size_bytes``/``dropped`` are about the other rows; ``snapshot_*`` about the pictures.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from agent.delivery.state import DB_NAME, bump_counter, get_counter, open_db

__all__ = ["Outbox", "Row"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    created REAL    NOT NULL,
    snapshot INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refused (
    id         INTEGER PRIMARY KEY,
    attempts   INTEGER NOT NULL,
    not_before REAL    NOT NULL,
    reason     TEXT    NOT NULL
);
"""

DROPPED = "outbox_dropped"
DROPPED_BYTES = "outbox_dropped_bytes"
DROP_REASON = "outbox_drop_reason"
SNAP_DROPPED = "snapshots_dropped"
SNAP_DROPPED_BYTES = "snapshots_dropped_bytes"
SNAP_DROP_REASON = "snapshots_drop_reason"
_COLS = "id, topic, payload, qos, retain, created, snapshot"
_Item = tuple[str, Callable[[int], bytes], int, bool, bool]  # topic, build(seq), qos, retain, snapshot
_WARN_EVERY_S = 10.0


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float  # unix time the row was stored
    snapshot: bool = False  # an alert's JPEG (its own byte budget, published after waiting alerts)


def _rows(cur: Iterable[tuple]) -> list[Row]:
    return [Row(int(i), t, bytes(p), int(q), bool(r), float(c), bool(s)) for i, t, p, q, r, c, s in cur]


class Outbox:
    """A bounded, ordered, crash-safe queue of MQTT messages. Thread-safe.

    ``path`` is the database file, or a state directory (then ``<dir>/agent.db`` is used).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        snapshot_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if max_rows < 1 or max_bytes < 1 or snapshot_max_bytes < 1:
            raise ValueError("outbox bounds must be positive (max_rows, max_bytes, snapshot_max_bytes >= 1)")
        path = Path(path) / DB_NAME if Path(path).is_dir() else Path(path)
        self.path = path
        self.max_rows = int(max_rows)
        self.max_bytes = int(max_bytes)
        self.snapshot_max_bytes = int(snapshot_max_bytes)
        self._lock = threading.Lock()
        self._conn = open_db(path)
        self._conn.executescript(_SCHEMA)
        if "snapshot" not in {c[1] for c in self._conn.execute("PRAGMA table_info(outbox)")}:
            self._conn.execute("ALTER TABLE outbox ADD COLUMN snapshot INTEGER NOT NULL DEFAULT 0")
        self._conn.execute("CREATE INDEX IF NOT EXISTS outbox_snapshot ON outbox(snapshot, id)")
        # per class (False: alerts and answers, True: snapshots): [rows, bytes]
        self._tally = {False: [0, 0], True: [0, 0]}
        for snap, rows, size in self._conn.execute(
            "SELECT snapshot, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox GROUP BY snapshot"
        ):
            self._tally[bool(snap)] = [int(rows), int(size)]
        self._unwarned_drops, self._last_warn = {False: 0, True: 0}, {False: 0.0, True: 0.0}
        self._closed = False
        if self._tally[False][0] or self._tally[True][0]:
            (n, size), (n_snap, _) = self._tally[False], self._tally[True]
            log.info("outbox %s: %d row(s) (%d bytes), %d snapshot(s) waiting", path, n, size, n_snap)

    # -- writing -------------------------------------------------------------------------------
    def put(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *, snapshot: bool = False
    ) -> int:
        """Store a message durably; returns its id (monotonic). ``snapshot``: a snapshot row."""
        row_id, _ = self._insert([(topic, lambda _seq: payload, qos, retain, snapshot)], with_seq=False)
        return row_id

    def put_alert(
        self,
        topic: str,
        build: Callable[[int], bytes],
        qos: int = 1,
        retain: bool = False,
        *,
        snapshot: Optional[tuple[str, bytes]] = None,
    ) -> tuple[int, int]:
        """Allocate the next ``seq`` and store ``build(seq)`` in ONE transaction; returns ``(id, seq)``.
        ``snapshot`` = ``(topic, jpeg)``: a snapshot row stored right after it, in the same transaction
        (QoS 1, not retained; it may be dropped at once when the JPEG alone is over its budget).

        If ``build`` raises, nothing is stored and the ``seq`` is not used.
        """
        items: list[_Item] = [(topic, build, qos, retain, False)]
        if snapshot is not None:
            jpeg = bytes(snapshot[1])
            items.append((snapshot[0], lambda _seq: jpeg, 1, False, True))
        return self._insert(items, with_seq=True)

    def _insert(self, items: list[_Item], *, with_seq: bool) -> tuple[int, int]:
        """Store ``items`` (topic, build, qos, retain, snapshot) in one transaction; returns the first
        row's id and the ``seq`` (0 without ``with_seq``)."""
        for item in items:
            if item[2] not in (0, 1, 2):
                raise ValueError(f"qos must be 0, 1 or 2, not {item[2]}")
        with self._lock:
            self._check_open()
            conn = self._conn
            tally = {k: list(v) for k, v in self._tally.items()}
            drops: list[tuple[bool, int, str]] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = bump_counter(conn, "seq") if with_seq else 0
                ids = []
                for topic, build, qos, retain, snap in items:
                    payload = bytes(build(seq))
                    cur = conn.execute(
                        "INSERT INTO outbox(topic, payload, qos, retain, created, snapshot) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (topic, payload, qos, int(retain), time.time(), int(snap)),
                    )
                    ids.append(int(cur.lastrowid or 0))
                    t = tally[snap]
                    t[0], t[1] = t[0] + 1, t[1] + len(payload)
                    if self._over(snap, t[0], t[1]):
                        n, freed, reason = self._drop_oldest(ids[-1], t[0], t[1], snap)
                        t[0], t[1] = t[0] - n, t[1] - freed
                        drops.append((snap, n, reason))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._tally = tally
            for snap, n, reason in drops:
                self._warn_drop(n, reason, snap)
            return ids[0], seq

    def _over(self, snap: bool, rows: int, size: int) -> bool:
        if snap:
            return size > self.snapshot_max_bytes
        return rows > self.max_rows or size > self.max_bytes

    def _drop_oldest(self, keep_id: int, rows: int, size: int, snap: bool = False) -> tuple[int, int, str]:
        """Delete the oldest rows of one class until within its bounds; inside the open transaction.
        Alerts and answers never drop ``keep_id`` (the new row); a new picture does go, first and alone,
        when it is over the budget by itself."""
        conn = self._conn
        victims: list[int] = []
        freed = 0
        cur = conn.execute(  # a new picture over the budget alone goes first, alone
            "SELECT id, LENGTH(payload) FROM outbox WHERE snapshot = ? AND (? OR id != ?) "
            "ORDER BY (id = ? AND LENGTH(payload) > ?) DESC, id",
            (int(snap), int(snap), keep_id, keep_id, self.snapshot_max_bytes if snap else -1),
        )
        for vid, vlen in cur:
            if not self._over(snap, rows - len(victims), size - freed):
                break
            victims.append(int(vid))
            freed += int(vlen)
        cur.close()
        conn.executemany("DELETE FROM outbox WHERE id = ?", ((v,) for v in victims))
        conn.executemany("DELETE FROM refused WHERE id = ?", ((v,) for v in victims))
        upto = victims[-1] if victims else "-"
        if snap:
            names = (SNAP_DROPPED, SNAP_DROPPED_BYTES, SNAP_DROP_REASON)
            text = (
                f"snapshot budget full (snapshot_max_bytes={self.snapshot_max_bytes}); "
                f"dropped {len(victims)} snapshot row(s), the oldest or one alone over it, up to id {upto} "
                "(alerts are kept)"
            )
        else:
            names = (DROPPED, DROPPED_BYTES, DROP_REASON)
            reason = "max_rows" if rows > self.max_rows else "max_bytes"
            text = (
                f"outbox full ({reason}: max_rows={self.max_rows}, max_bytes={self.max_bytes}); "
                f"dropped oldest row(s) up to id {upto}"
            )
        bump_counter(conn, names[0], len(victims))
        bump_counter(conn, names[1], freed)
        conn.execute(
            "INSERT INTO meta(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (names[2], text),
        )
        return len(victims), freed, text

    def _warn_drop(self, n: int, reason: str, snap: bool = False) -> None:
        self._unwarned_drops[snap] += n
        now = time.monotonic()
        if now - self._last_warn[snap] >= _WARN_EVERY_S:
            log.warning(
                "%s; %d row(s) dropped since the last warning (%d in total)",
                reason,
                self._unwarned_drops[snap],
                get_counter(self._conn, SNAP_DROPPED if snap else DROPPED),
            )
            self._unwarned_drops[snap] = 0
            self._last_warn[snap] = now

    def ack(self, row_id: int) -> bool:
        """Delete one row (its PUBACK arrived). Returns False if it was already gone (e.g. dropped)."""
        return self.ack_many([row_id]) == 1

    def ack_many(self, ids: Iterable[int]) -> int:
        """Delete several rows in one transaction; returns how many existed."""
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            tally = {k: list(v) for k, v in self._tally.items()}
            try:
                removed = 0
                for i in ids:
                    found = conn.execute(
                        "SELECT LENGTH(payload), snapshot FROM outbox WHERE id = ?", (i,)
                    ).fetchone()
                    if found is None:
                        continue
                    conn.execute("DELETE FROM outbox WHERE id = ?", (i,))
                    conn.execute("DELETE FROM refused WHERE id = ?", (i,))
                    removed += 1
                    t = tally[bool(found[1])]
                    t[0], t[1] = t[0] - 1, t[1] - int(found[0])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._tally = tally
            return removed

    # -- reading -------------------------------------------------------------------------------
    def peek(self, limit: int = 100, after_id: int = 0, snapshots: Optional[bool] = None) -> list[Row]:
        """The oldest ``limit`` rows with ``id > after_id``, in order, leaving out refused rows that
        wait for their retry (:meth:`refuse`); nothing is removed. ``snapshots``: only snapshot rows
        (True), only the others (False), or both (None)."""
        which = "" if snapshots is None else f"AND snapshot = {int(snapshots)} "
        with self._lock:
            self._check_open()
            cur = self._conn.execute(
                f"SELECT {_COLS} FROM outbox WHERE id > ? {which}"
                "AND id NOT IN (SELECT id FROM refused WHERE not_before > ?) ORDER BY id LIMIT ?",
                (int(after_id), time.time(), int(limit)),
            )
            return _rows(cur)

    # -- refused by the broker -------------------------------------------------------------------
    def refuse(self, row_id: int, reason: str, *, base_s: float, max_s: float) -> float:
        """The broker refused row ``row_id`` (MQTT 5 PUBACK): keep it, and retry it after a delay
        that doubles with every refusal (``base_s`` .. ``max_s``); rows behind it go on. Returns
        the delay."""
        with self._lock:
            self._check_open()
            found = self._conn.execute("SELECT attempts FROM refused WHERE id = ?", (int(row_id),)).fetchone()
            attempts = (int(found[0]) if found else 0) + 1
            delay = min(max_s, base_s * 2 ** (attempts - 1))
            self._conn.execute(
                "INSERT OR REPLACE INTO refused (id, attempts, not_before, reason) VALUES (?, ?, ?, ?)",
                (int(row_id), attempts, time.time() + delay, reason[:500]),
            )
            return delay

    def due_refused(self, limit: int) -> list[Row]:
        """Refused rows whose retry time has come, oldest first."""
        with self._lock:
            self._check_open()
            cur = self._conn.execute(
                "SELECT o.id, o.topic, o.payload, o.qos, o.retain, o.created, o.snapshot FROM outbox o "
                "JOIN refused r ON r.id = o.id WHERE r.not_before <= ? ORDER BY o.id LIMIT ?",
                (time.time(), int(limit)),
            )
            return _rows(cur)

    def refused(self) -> tuple[int, Optional[str]]:
        """Rows waiting after a refusal, and the broker's latest reason (None when there are none);
        alerts and answers only, like :meth:`depth` (refused pictures are retried all the same)."""
        with self._lock:
            self._check_open()
            waiting = "refused r JOIN outbox o ON o.id = r.id AND o.snapshot = 0"
            n, reason = self._conn.execute(
                f"SELECT COUNT(*), (SELECT r.reason FROM {waiting} ORDER BY r.not_before DESC LIMIT 1) "
                f"FROM {waiting}"
            ).fetchone()
            return int(n), reason

    def last_id(self) -> int:
        """The highest id stored now (0 if empty): rows up to it exist before anything put later."""
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
            return int(row[0])

    def depth(self) -> int:
        """Rows waiting for a PUBACK: alerts and command answers (snapshot rows: :meth:`snapshot_depth`)."""
        with self._lock:
            return self._tally[False][0]

    def size_bytes(self) -> int:
        """Payload bytes waiting (alerts and command answers)."""
        with self._lock:
            return self._tally[False][1]

    def snapshot_depth(self) -> int:
        """Snapshot rows (alert JPEGs) waiting for a PUBACK (within ``snapshot_max_bytes``)."""
        with self._lock:
            return self._tally[True][0]

    def snapshots_dropped(self) -> tuple[int, int]:
        """Snapshot rows and bytes dropped to stay within ``snapshot_max_bytes`` (persisted)."""
        with self._lock:
            self._check_open()
            return get_counter(self._conn, SNAP_DROPPED), get_counter(self._conn, SNAP_DROPPED_BYTES)

    def dropped(self) -> int:
        """Rows dropped to stay within bounds, over the life of this database (persisted)."""
        with self._lock:
            self._check_open()
            return get_counter(self._conn, DROPPED)

    def dropped_bytes(self) -> int:
        with self._lock:
            self._check_open()
            return get_counter(self._conn, DROPPED_BYTES)

    def drop_reason(self) -> str | None:
        """Why rows were last dropped (None if never)."""
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (DROP_REASON,)).fetchone()
            return str(row[0]) if row else None

    # -- lifecycle -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"outbox {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass
                self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
