"""The bin-event journal (SQLite, real files) and what the link does when it cannot store an event:
the message stays unacknowledged (a small fake handler at the inbox seam, said to be one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.delivery.counters import LinkCounters
from agent.delivery.inbox import Inbox
from agent.intake.inbound import NotAccepted
from agent.intake.journal import EventJournal, JournalError


def test_accept_is_durable_and_a_redelivery_is_recognised(tmp_path: Path) -> None:
    j = EventJournal(tmp_path)
    assert j.accept("cam0", "e1", "B1", b"{}") is True
    assert j.accept("cam0", "e1", "B1", b"{}") is False  # same camera and event: a redelivery
    assert j.accept("cam1", "e1", "B9", b"{}") is True  # event ids are per camera
    j.close()
    again = EventJournal(tmp_path)  # a new process sees what the old one accepted
    assert [(p.camera, p.event_id) for p in again.pending()] == [("cam0", "e1"), ("cam1", "e1")]
    assert again.finish("cam0", "e1", "match") is True
    assert again.finish("cam0", "e1", "failed", "twice") is False  # only a pending event finishes
    assert again.outcome("cam0", "e1") == ("done", "match")
    assert again.outcome("cam1", "e1") == ("pending", "")
    assert again.counts() == {"pending": 1, "done": 1}
    again.close()


def test_finished_rows_are_pruned_to_keep_done(tmp_path: Path) -> None:
    j = EventJournal(tmp_path, keep_done=10)
    for i in range(600):
        j.accept("cam0", f"e{i}", "B", b"{}")
        j.finish("cam0", f"e{i}", "match")
    counts = j.counts()
    assert counts["pending"] == 0 and 10 <= counts["done"] <= 10 + 256
    assert j.outcome("cam0", "e599") == ("done", "match")  # the newest are kept
    assert j.outcome("cam0", "e0") is None
    j.close()


def test_a_journal_that_cannot_write_raises_journal_error(tmp_path: Path) -> None:
    j = EventJournal(tmp_path)
    j.close()
    with pytest.raises(JournalError, match="cannot store bin event"):
        j.accept("cam0", "e1", "B1", b"{}")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "events.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="cannot open the bin-event journal"):
        EventJournal(bad)


class _Msg:
    def __init__(self, topic: str, mid: int, qos: int = 1) -> None:
        self.topic, self.mid, self.qos, self.payload = topic, mid, qos, b"{}"


class _AckClient:
    """Fake paho client: records ``ack(mid, qos)`` calls (the only method the inbox calls)."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)


def test_inbox_acknowledges_after_the_handler_and_never_what_it_could_not_store() -> None:
    seen: list[str] = []

    def handler(topic: str, payload: bytes) -> None:  # fake handler
        seen.append(topic)
        if topic == "full":
            raise NotAccepted("disk full")
        if topic == "boom":
            raise ValueError("a bug")

    counters = LinkCounters()
    inbox = Inbox(handler, counters)
    client: Any = _AckClient()
    inbox.start()
    for mid, topic in enumerate(["ok", "full", "boom", "ok2"], start=1):
        inbox.on_message(client, None, _Msg(topic, mid))  # type: ignore[arg-type]
    inbox.stop()
    assert seen == ["ok", "full", "boom", "ok2"]
    assert client.acked == [1, 3, 4]  # 2 stays unacknowledged: the broker re-sends it later
    assert counters.messages_unacked == 1 and counters.messages_dropped == 0


def test_inbox_drops_only_qos0_when_behind() -> None:
    counters = LinkCounters()
    inbox = Inbox(lambda t, p: None, counters, maxsize=2)  # not started: nothing is handled
    client: Any = _AckClient()
    for mid in range(5):
        inbox.on_message(client, None, _Msg("q0", mid, qos=0))  # type: ignore[arg-type]
        inbox.on_message(client, None, _Msg("q1", 100 + mid, qos=1))  # type: ignore[arg-type]
    assert counters.messages_dropped == 4  # QoS 0 once 2 messages are waiting
    assert inbox.waiting() == 5 + 1  # every QoS 1 kept; the broker's receive maximum bounds them


def test_sqlite_error_type_is_wrapped(tmp_path: Path) -> None:
    j = EventJournal(tmp_path)
    j.close()
    with pytest.raises(JournalError) as info:
        j.accept("c", "e", "b", b"")
    assert isinstance(info.value.__cause__, sqlite3.Error)
