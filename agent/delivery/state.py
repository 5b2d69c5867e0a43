"""Persisted agent counters (``seq``, ``session``) in the state directory's SQLite database.

The outbox lives in the same database file (``<state_dir>/agent.db``) so that an alert's ``seq`` is
allocated in the same transaction that stores the alert (:meth:`agent.delivery.outbox.Outbox.put_alert`):
after a crash at any instant either both happened or neither did, and ``seq`` never repeats.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["DB_NAME", "AgentState", "bump_counter", "get_counter", "open_db"]

DB_NAME = "agent.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (creating) the agent database: WAL journal, ``synchronous=FULL``, autocommit mode.

    Transactions are explicit (``BEGIN IMMEDIATE`` ... ``COMMIT``) so that concurrent writers on the
    same file serialise instead of failing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    return conn


def bump_counter(conn: sqlite3.Connection, name: str, by: int = 1) -> int:
    """Add ``by`` to a counter inside the caller's transaction and return the new value."""
    conn.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        (name, by),
    )
    return get_counter(conn, name)


def get_counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


class AgentState:
    """The agent's persisted counters; safe to use from several threads.

    ``seq`` numbers alerts (per device, for gap detection); ``session`` numbers MQTT connections
    (bumped before each connect so the last will carries it).
    """

    SEQ = "seq"
    SESSION = "session"

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.state_dir / DB_NAME
        self._conn = open_db(self.db_path)
        self._lock = threading.Lock()

    def _bump(self, name: str) -> int:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                value = bump_counter(self._conn, name)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return value

    def _get(self, name: str) -> int:
        with self._lock:
            return get_counter(self._conn, name)

    def next_seq(self) -> int:
        """Allocate the next alert ``seq`` (durable before it is returned).

        Alerts should get theirs from :meth:`agent.delivery.outbox.Outbox.put_alert` instead, which commits
        the ``seq`` together with the outbox row.
        """
        return self._bump(self.SEQ)

    @property
    def seq(self) -> int:
        """The last ``seq`` handed out (0 before the first alert)."""
        return self._get(self.SEQ)

    def bump_session(self) -> int:
        """Start a new MQTT session number (durable before it is returned)."""
        return self._bump(self.SESSION)

    @property
    def session(self) -> int:
        """The current session number (0 before the first connect)."""
        return self._get(self.SESSION)

    def get_meta(self, name: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            return str(row[0]) if row else None

    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AgentState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
