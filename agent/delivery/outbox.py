"""The durable outbox: every alert is stored here before it is published, deleted on PUBACK.

SQLite (WAL, ``synchronous=FULL``) in the state directory's ``agent.db`` (shared with
:class:`agent.delivery.state.AgentState`). Rows keep their insertion order (``id`` never repeats, even after
deletes). The outbox is bounded by rows and payload bytes: when a new row would exceed a bound the
oldest rows are dropped, counted in a persisted counter (with the reason) and logged as a WARNING.
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
    created REAL    NOT NULL
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
_WARN_EVERY_S = 10.0


@dataclass(frozen=True)
class Row:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float  # unix time the row was stored


class Outbox:
    """A bounded, ordered, crash-safe queue of MQTT messages. Thread-safe.

    ``path`` is the database file, or a state directory (then ``<dir>/agent.db`` is used).
    """

    def __init__(
        self, path: str | Path, *, max_rows: int = 100_000, max_bytes: int = 256 * 1024 * 1024
    ) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError("outbox bounds must be positive (max_rows >= 1, max_bytes >= 1)")
        path = Path(path)
        if path.is_dir():
            path = path / DB_NAME
        self.path = path
        self.max_rows = int(max_rows)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._conn = open_db(path)
        self._conn.executescript(_SCHEMA)
        rows, size = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
        ).fetchone()
        self._rows = int(rows)
        self._bytes = int(size)
        self._unwarned_drops = 0
        self._last_warn = 0.0
        self._closed = False
        if self._rows:
            log.info("outbox %s: %d row(s) (%d bytes) waiting from before", path, self._rows, self._bytes)

    # -- writing -------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Store a message durably; returns its id (monotonic)."""
        row_id, _ = self._insert(topic, lambda _seq: payload, qos, retain, with_seq=False)
        return row_id

    def put_alert(
        self, topic: str, build: Callable[[int], bytes], qos: int = 1, retain: bool = False
    ) -> tuple[int, int]:
        """Allocate the next ``seq`` and store ``build(seq)`` in ONE transaction; returns ``(id, seq)``.

        If ``build`` raises, nothing is stored and the ``seq`` is not used.
        """
        return self._insert(topic, build, qos, retain, with_seq=True)

    def _insert(
        self, topic: str, build: Callable[[int], bytes], qos: int, retain: bool, *, with_seq: bool
    ) -> tuple[int, int]:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos}")
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = bump_counter(conn, "seq") if with_seq else 0
                payload = bytes(build(seq))
                cur = conn.execute(
                    "INSERT INTO outbox(topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                    (topic, payload, qos, int(retain), time.time()),
                )
                row_id = int(cur.lastrowid or 0)
                rows, size = self._rows + 1, self._bytes + len(payload)
                dropped, dropped_bytes, reason = 0, 0, ""
                if rows > self.max_rows or size > self.max_bytes:
                    dropped, dropped_bytes, reason = self._drop_oldest(row_id, rows, size)
                    rows -= dropped
                    size -= dropped_bytes
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._rows, self._bytes = rows, size
            if dropped:
                self._warn_drop(dropped, reason)
            return row_id, seq

    def _drop_oldest(self, keep_id: int, rows: int, size: int) -> tuple[int, int, str]:
        """Delete oldest rows (never ``keep_id``) until within bounds; inside the open transaction."""
        conn = self._conn
        reason = "max_rows" if rows > self.max_rows else "max_bytes"
        victims: list[int] = []
        freed = 0
        cur = conn.execute("SELECT id, LENGTH(payload) FROM outbox WHERE id != ? ORDER BY id", (keep_id,))
        for vid, vlen in cur:
            if rows - len(victims) <= self.max_rows and size - freed <= self.max_bytes:
                break
            victims.append(int(vid))
            freed += int(vlen)
        cur.close()
        conn.executemany("DELETE FROM outbox WHERE id = ?", ((v,) for v in victims))
        conn.executemany("DELETE FROM refused WHERE id = ?", ((v,) for v in victims))
        bump_counter(conn, DROPPED, len(victims))
        bump_counter(conn, DROPPED_BYTES, freed)
        text = (
            f"outbox full ({reason}: max_rows={self.max_rows}, max_bytes={self.max_bytes}); "
            f"dropped oldest row(s) up to id {victims[-1] if victims else '-'}"
        )
        conn.execute(
            "INSERT INTO meta(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (DROP_REASON, text),
        )
        return len(victims), freed, text

    def _warn_drop(self, n: int, reason: str) -> None:
        self._unwarned_drops += n
        now = time.monotonic()
        if now - self._last_warn >= _WARN_EVERY_S:
            log.warning(
                "%s; %d row(s) dropped since the last warning (%d in total)",
                reason,
                self._unwarned_drops,
                get_counter(self._conn, DROPPED),
            )
            self._unwarned_drops = 0
            self._last_warn = now

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
            try:
                removed, freed = 0, 0
                for i in ids:
                    found = conn.execute("SELECT LENGTH(payload) FROM outbox WHERE id = ?", (i,)).fetchone()
                    if found is None:
                        continue
                    conn.execute("DELETE FROM outbox WHERE id = ?", (i,))
                    conn.execute("DELETE FROM refused WHERE id = ?", (i,))
                    removed += 1
                    freed += int(found[0])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._rows -= removed
            self._bytes -= freed
            return removed

    # -- reading -------------------------------------------------------------------------------
    def peek(self, limit: int = 100, after_id: int = 0) -> list[Row]:
        """The oldest ``limit`` rows with ``id > after_id``, in order, leaving out refused rows that
        wait for their retry (:meth:`refuse`); nothing is removed."""
        with self._lock:
            self._check_open()
            cur = self._conn.execute(
                "SELECT id, topic, payload, qos, retain, created FROM outbox WHERE id > ? "
                "AND id NOT IN (SELECT id FROM refused WHERE not_before > ?) ORDER BY id LIMIT ?",
                (int(after_id), time.time(), int(limit)),
            )
            return [Row(int(i), t, bytes(p), int(q), bool(r), float(c)) for i, t, p, q, r, c in cur]

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
                "SELECT o.id, o.topic, o.payload, o.qos, o.retain, o.created FROM outbox o "
                "JOIN refused r ON r.id = o.id WHERE r.not_before <= ? ORDER BY o.id LIMIT ?",
                (time.time(), int(limit)),
            )
            return [Row(int(i), t, bytes(p), int(q), bool(r), float(c)) for i, t, p, q, r, c in cur]

    def refused(self) -> tuple[int, Optional[str]]:
        """Rows waiting after a refusal, and the broker's latest reason (None when there are none)."""
        with self._lock:
            self._check_open()
            n, reason = self._conn.execute(
                "SELECT COUNT(*), (SELECT r.reason FROM refused r JOIN outbox o ON o.id = r.id "
                "ORDER BY r.not_before DESC LIMIT 1) FROM refused r JOIN outbox o ON o.id = r.id"
            ).fetchone()
            return int(n), reason

    def last_id(self) -> int:
        """The highest id stored now (0 if empty): rows up to it exist before anything put later."""
        with self._lock:
            self._check_open()
            row = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()
            return int(row[0])

    def depth(self) -> int:
        """Rows waiting for a PUBACK."""
        with self._lock:
            return self._rows

    def size_bytes(self) -> int:
        """Payload bytes waiting."""
        with self._lock:
            return self._bytes

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
