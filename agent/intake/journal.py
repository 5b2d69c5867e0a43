"""The bin-event journal: every accepted ``bin`` event is written here before the broker gets its
acknowledgement, and stays ``pending`` until its outcome (a verdict or a reported failure) is
stored in the outbox.

SQLite (WAL, ``synchronous=FULL``) in ``<state_dir>/events.db``. ``(camera, event_id)`` is unique,
so an event the broker delivers again (a persistent session re-sends what was not acknowledged when
the connection or the agent died) is recognised and not decided twice. At start the agent resumes
what is still pending (:meth:`EventJournal.pending`): fresh events are captured again, older ones
are reported failed. Finished rows are kept (the newest ``keep_done``) to recognise late duplicates.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["EventJournal", "JournalError", "PendingEvent"]

log = logging.getLogger(__name__)

DB_NAME = "events.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    camera   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    bin_id   TEXT NOT NULL,
    payload  BLOB NOT NULL,
    received REAL NOT NULL,
    state    TEXT NOT NULL DEFAULT 'pending',
    outcome  TEXT,
    reason   TEXT,
    finished REAL,
    UNIQUE (camera, event_id)
);
CREATE INDEX IF NOT EXISTS events_state ON events(state, id);
"""


class JournalError(RuntimeError):
    """The journal could not store an event (disk full, read-only, corrupt): not acknowledged."""


@dataclass(frozen=True)
class PendingEvent:
    camera: str
    event_id: str
    bin_id: str
    payload: bytes
    received: float  # unix time the agent accepted it

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.received)


class EventJournal:
    """Durable record of accepted bin events and how each ended. Thread-safe."""

    def __init__(self, path: str | Path, *, keep_done: int = 10_000) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / DB_NAME
        self.path = path
        self.keep_done = max(1, int(keep_done))
        self._lock = threading.Lock()
        self._finished_since_prune = 0
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open the bin-event journal {path}: {e}") from e

    def accept(self, camera: str, event_id: str, bin_id: str, payload: bytes) -> bool:
        """Store a new event as pending (durable on return); False when ``(camera, event_id)`` is
        already known (a redelivery). JournalError when it cannot be stored."""
        try:
            with self._lock:
                cur = self._conn.execute(
                    "INSERT OR IGNORE INTO events(camera, event_id, bin_id, payload, received) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (camera, event_id, bin_id, bytes(payload), time.time()),
                )
                return cur.rowcount == 1
        except sqlite3.Error as e:
            raise JournalError(f"cannot store bin event {event_id!r} in {self.path}: {e}") from e

    def finish(self, camera: str, event_id: str, outcome: str, reason: str = "") -> bool:
        """Record how the event ended; False when it was not pending (unknown or finished)."""
        try:
            with self._lock:
                cur = self._conn.execute(
                    "UPDATE events SET state = 'done', outcome = ?, reason = ?, finished = ? "
                    "WHERE camera = ? AND event_id = ? AND state = 'pending'",
                    (outcome, reason[:500], time.time(), camera, event_id),
                )
                self._finished_since_prune += 1
                if self._finished_since_prune >= 256:
                    self._prune()
                return cur.rowcount == 1
        except sqlite3.Error as e:
            log.error("cannot record the outcome of bin event %s in %s: %s", event_id, self.path, e)
            return False

    def _prune(self) -> None:
        # caller holds the lock
        self._finished_since_prune = 0
        self._conn.execute(
            "DELETE FROM events WHERE state = 'done' AND id <= "
            "(SELECT id FROM events WHERE state = 'done' ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (self.keep_done,),
        )

    def pending(self, limit: Optional[int] = None) -> list[PendingEvent]:
        """Events without an outcome yet, oldest first."""
        with self._lock:
            cur = self._conn.execute(
                "SELECT camera, event_id, bin_id, payload, received FROM events "
                "WHERE state = 'pending' ORDER BY id LIMIT ?",
                (-1 if limit is None else int(limit),),
            )
            return [PendingEvent(c, e, b, bytes(p), float(r)) for c, e, b, p, r in cur]

    def outcome(self, camera: str, event_id: str) -> Optional[tuple[str, str]]:
        """``(state, outcome)`` of a known event (outcome empty while pending), else None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state, COALESCE(outcome, '') FROM events WHERE camera = ? AND event_id = ?",
                (camera, event_id),
            ).fetchone()
            return (str(row[0]), str(row[1])) if row else None

    def counts(self) -> dict[str, int]:
        """``{"pending": n, "done": n}`` (done: rows kept, at most ``keep_done`` after pruning)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall()
        out = {"pending": 0, "done": 0}
        out.update({str(s): int(n) for s, n in rows})
        return out

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
