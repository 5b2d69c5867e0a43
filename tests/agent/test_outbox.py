"""The SQLite outbox and the persisted counters: order, bounds with counted drops, durability."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.delivery.outbox import Outbox
from agent.delivery.state import AgentState


def test_put_peek_ack_keeps_order_and_ids_monotonic(tmp_path: Path) -> None:
    with Outbox(tmp_path) as ob:
        ids = [ob.put("t/a", f"m{i}".encode(), qos=1) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        rows = ob.peek(10)
        assert [r.payload for r in rows] == [f"m{i}".encode() for i in range(5)]
        assert [r.id for r in rows] == ids
        assert rows[0].topic == "t/a" and rows[0].qos == 1 and rows[0].retain is False
        assert ob.depth() == 5 and ob.size_bytes() == sum(len(r.payload) for r in rows)
        assert [r.id for r in ob.peek(2, after_id=ids[1])] == ids[2:4]
        assert ob.ack(ids[2]) is True
        assert ob.ack(ids[2]) is False  # already gone
        assert [r.id for r in ob.peek(10)] == [ids[0], ids[1], ids[3], ids[4]]
        assert ob.ack_many([ids[0], ids[1]]) == 2
        assert ob.depth() == 2
        # ids never repeat, even after the rows before them were deleted
        ob.ack_many([ids[3], ids[4]])
        assert ob.depth() == 0 and ob.size_bytes() == 0
        assert ob.put("t/a", b"x") > ids[-1]


def test_bound_by_rows_drops_oldest_counts_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.delivery.outbox"), Outbox(tmp_path, max_rows=5) as ob:
        for i in range(8):
            ob.put("t", f"m{i}".encode())
        assert ob.depth() == 5
        assert [r.payload for r in ob.peek(10)] == [f"m{i}".encode() for i in range(3, 8)]
        assert ob.dropped() == 3
        assert ob.dropped_bytes() == 6
        assert "max_rows" in (ob.drop_reason() or "")
    assert any("outbox full" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_bound_by_bytes(tmp_path: Path) -> None:
    with Outbox(tmp_path, max_bytes=1000) as ob:
        for _ in range(5):
            ob.put("t", b"x" * 300)
        assert ob.size_bytes() <= 1000
        assert ob.depth() == 3
        assert ob.dropped() == 2
        assert "max_bytes" in (ob.drop_reason() or "")
        # a single row larger than the bound is kept alone rather than silently lost
        big = ob.put("t", b"y" * 1500)
        assert [r.id for r in ob.peek(10)] == [big]
        assert ob.dropped() == 5


def test_rows_counters_and_drops_survive_reopen(tmp_path: Path) -> None:
    ob = Outbox(tmp_path, max_rows=3)
    for i in range(4):
        ob.put("t", f"m{i}".encode(), retain=True)
    last = ob.peek(10)[-1].id
    ob.close()
    with pytest.raises(RuntimeError, match="closed"):
        ob.put("t", b"late")

    ob2 = Outbox(tmp_path / "agent.db", max_rows=3)
    assert [r.payload for r in ob2.peek(10)] == [b"m1", b"m2", b"m3"]
    assert all(r.retain for r in ob2.peek(10))
    assert ob2.depth() == 3 and ob2.size_bytes() == 6
    assert ob2.dropped() == 1
    assert ob2.put("t", b"m4") > last
    assert ob2._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ob2.close()
    conn = sqlite3.connect(tmp_path / "agent.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persisted in the file
    conn.close()


def test_put_alert_allocates_seq_with_the_row(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    ob = Outbox(state.db_path)
    _id1, s1 = ob.put_alert("t", lambda seq: f"seq={seq}".encode())
    _id2, s2 = ob.put_alert("t", lambda seq: f"seq={seq}".encode())
    assert (s1, s2) == (1, 2)
    assert [r.payload for r in ob.peek(10)] == [b"seq=1", b"seq=2"]

    def boom(seq: int) -> bytes:
        raise ValueError("cannot serialise")

    with pytest.raises(ValueError):
        ob.put_alert("t", boom)
    assert ob.depth() == 2
    # the failed build neither stored a row nor used up a seq
    assert state.seq == 2
    assert state.next_seq() == 3  # AgentState and Outbox share one counter
    assert ob.put_alert("t", lambda seq: b"x")[1] == 4
    ob.close()
    state.close()

    state2 = AgentState(tmp_path)
    assert state2.seq == 4
    assert state2.next_seq() == 5
    state2.close()


def test_session_counter_persists(tmp_path: Path) -> None:
    with AgentState(tmp_path) as st:
        assert st.session == 0
        assert [st.bump_session() for _ in range(3)] == [1, 2, 3]
        st.set_meta("k", "v")
    with AgentState(tmp_path) as st:
        assert st.session == 3
        assert st.bump_session() == 4
        assert st.get_meta("k") == "v"


def test_concurrent_writers_get_unique_ids_and_seqs(tmp_path: Path) -> None:
    ob = Outbox(tmp_path)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def writer() -> None:
        for _ in range(50):
            r = ob.put_alert("t", lambda seq: str(seq).encode())
            with lock:
                results.append(r)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    assert len({i for i, _ in results}) == 200 and sorted(s for _, s in results) == list(range(1, 201))
    rows = ob.peek(1000)
    # seq follows insertion order because both are assigned in one transaction
    assert [int(r.payload) for r in rows] == list(range(1, 201))
    ob.close()


def test_refused_rows_wait_for_their_retry_and_leave_with_their_row(tmp_path: Path) -> None:
    """A row the broker refused is skipped by peek until its retry time, then due again; its
    refusal record goes with the row, whether acknowledged or dropped by the bounds."""
    with Outbox(tmp_path, max_rows=3) as ob:
        a, b = ob.put("t", b"a"), ob.put("t", b"b")
        assert ob.refuse(a, "Not authorized", base_s=60, max_s=600) == 60
        assert [r.id for r in ob.peek(10)] == [b]  # the rows behind it go on
        assert ob.due_refused(10) == [] and ob.refused() == (1, "Not authorized")
        assert ob.refuse(a, "Not authorized", base_s=0, max_s=600) == 0  # due now
        assert [r.id for r in ob.due_refused(10)] == [a]
        for payload in (b"c", b"d", b"e"):  # past max_rows: the oldest (a) is dropped
            ob.put("t", payload)
        assert ob.refused() == (0, None)
    db = sqlite3.connect(tmp_path / "agent.db")
    assert db.execute("SELECT COUNT(*) FROM refused").fetchone()[0] == 0  # no orphaned record
    db.close()
