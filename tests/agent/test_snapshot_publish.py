"""Every alert's snapshot reaches the operator (docs/delivery.md, "Snapshots"): the JPEG is stored in
the outbox right after its alert and published raw on ``alert/snapshot/<alert_id>`` (QoS 1), within
a byte budget of its own that never pushes an alert out, and after the alerts that wait with it.

Real parts: the SQLite outbox, the MQTT link, a real mosquitto (tests/broker.py), and the whole agent
on a replay camera for the end-to-end case."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.delivery.config import MqttConfig
from agent.delivery.deliver import Delivery
from agent.delivery.link import MqttLink
from agent.delivery.outbox import Outbox
from agent.delivery.records import ReplayCursors
from agent.delivery.snapshots import SnapshotStore, encode_jpeg
from agent.delivery.state import AgentState
from agent.inference.decision import Decision
from agent.inference.pipeline import Decided
from agent.intake.presentations import Presentation
from agent.intake.sources import Frame
from agent.metrics import AgentMetrics
from contract.messages import Alert, ModelRef, Snapshot
from contract.topics import Topics
from tests.agent.mqtt_helpers import ROOT, Collector, PersistentMosquitto, make_alert, wait_until
from tests.hw import requires_mosquitto

TOPICS = Topics(site="s1", device="d1")


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    return encode_jpeg(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), 80)


def _alert_with(jpeg: bytes) -> Alert:
    digest = hashlib.sha256(jpeg).hexdigest()
    return make_alert(snapshot=Snapshot(uri=f"file:///snapshots/{digest[:12]}.jpg", sha256=digest))


def _pictures(col: Collector) -> dict[str, bytes]:
    """alert_id -> the JPEG received on its snapshot topic."""
    return {t.rsplit("/", 1)[-1]: p for t, p, _r in col.on("") if "/alert/snapshot/" in t}


# -- the outbox: a budget of their own -----------------------------------------------------------


def test_a_full_snapshot_budget_drops_pictures_never_alerts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pictures = [_jpeg(i) for i in range(10)]
    size = max(len(p) for p in pictures)
    budget = 2 * size + size // 2  # room for two pictures
    with caplog.at_level(logging.WARNING, logger="agent.delivery.outbox"):
        ob = Outbox(tmp_path, max_rows=100, snapshot_max_bytes=budget)
        ids = []
        for i, jpeg in enumerate(pictures):
            row_id, seq = ob.put_alert(
                "a/alert", lambda s: f"alert {s}".encode(), snapshot=(f"a/snap/{i}", jpeg)
            )
            ids.append(row_id)
            assert seq == i + 1
        assert ob.depth() == 10 and ob.dropped() == 0  # every alert kept
        assert (
            ob.snapshot_depth() == 2 and sum(len(r.payload) for r in ob.peek(100, snapshots=True)) <= budget
        )
        assert ob.snapshots_dropped() == (8, sum(len(p) for p in pictures[:8]))
        rows = ob.peek(100)
        assert [r.topic for r in rows if r.snapshot] == ["a/snap/8", "a/snap/9"]  # the newest pictures
        # each picture lies right after its alert
        assert [r.id for r in rows if r.snapshot] == [ids[8] + 1, ids[9] + 1]
        assert [r.payload for r in ob.peek(100, snapshots=False)] == [
            f"alert {s}".encode() for s in range(1, 11)
        ]
        # a picture alone over the budget is dropped at once; its alert is stored all the same
        _, seq = ob.put_alert("a/alert", lambda s: b"big", snapshot=("a/snap/big", b"x" * (budget + 1)))
        assert seq == 11 and ob.depth() == 11
        assert [r.topic for r in ob.peek(100) if r.snapshot] == ["a/snap/8", "a/snap/9"]  # kept
        assert ob.snapshots_dropped()[0] == 9
        ob.close()
    assert any(
        "snapshot budget full" in r.getMessage() and "alerts are kept" in r.getMessage()
        for r in caplog.records
    )
    # counts by class survive a reopen
    with Outbox(tmp_path, max_rows=100, snapshot_max_bytes=budget) as ob:
        assert (ob.depth(), ob.snapshot_depth()) == (11, 2)
        assert ob.snapshots_dropped()[0] == 9 and ob.dropped() == 0


def test_alerts_over_their_bounds_drop_alerts_not_pictures(tmp_path: Path) -> None:
    with Outbox(tmp_path, max_rows=3) as ob:
        for i in range(5):
            ob.put_alert("a/alert", lambda s: f"alert {s}".encode(), snapshot=(f"a/snap/{i}", _jpeg(i)))
        assert ob.depth() == 3 and ob.dropped() == 2
        assert ob.snapshot_depth() == 5 and ob.snapshots_dropped() == (0, 0)


def test_an_outbox_from_before_snapshots_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "agent.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
        "payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL);"
        "INSERT INTO outbox(topic, payload, qos, retain, created) VALUES ('t', x'6f6c64', 1, 0, 0);"
    )
    conn.commit()
    conn.close()
    with Outbox(tmp_path) as ob:
        assert ob.depth() == 1 and ob.snapshot_depth() == 0
        assert [(r.payload, r.snapshot) for r in ob.peek(10)] == [(b"old", False)]
        ob.put("t/s", b"jpeg", snapshot=True)
        assert ob.snapshot_depth() == 1 and ob.depth() == 1


# -- the link, against a real broker -----------------------------------------------------------


@requires_mosquitto
def test_each_alerts_jpeg_arrives_on_its_topic_with_the_sha256_it_names(mosquitto, tmp_path: Path) -> None:
    col = Collector(mosquitto.url, f"{ROOT}/alert/#")
    state = AgentState(tmp_path / "state")
    outbox = Outbox(state.db_path)
    link = MqttLink(MqttConfig(broker=mosquitto.url, reconnect_min_delay=0.1), TOPICS, outbox, state)
    link.start()
    try:
        pictures = [_jpeg(i) for i in range(3)]
        stored = [link.enqueue_alert(_alert_with(p), p) for p in pictures]
        ids = {a.alert_id for a in stored}
        assert wait_until(lambda: col.alert_ids() == ids and set(_pictures(col)) == ids)
        got = _pictures(col)
        for a, jpeg in zip(stored, pictures, strict=True):
            assert a.snapshot is not None
            assert (
                a.snapshot.topic == TOPICS.alert_snapshot(a.alert_id) == f"{ROOT}/alert/snapshot/{a.alert_id}"
            )
            assert a.snapshot.size == len(jpeg)
            assert hashlib.sha256(got[a.alert_id]).hexdigest() == a.snapshot.sha256
            assert got[a.alert_id] == jpeg
        for received in col.alerts():  # as published: the snapshot's topic and size travel with it
            assert received.snapshot is not None and received.snapshot.topic == TOPICS.alert_snapshot(
                received.alert_id
            )
        assert all(not r for t, _p, r in col.on("") if "/alert/snapshot/" in t)  # not retained
        assert wait_until(lambda: outbox.depth() == 0 and outbox.snapshot_depth() == 0)
        # the JPEG must be the one the alert names
        with pytest.raises(ValueError, match="not the one its snapshot names"):
            link.enqueue_alert(_alert_with(pictures[0]), pictures[1])
        assert outbox.depth() == 0
    finally:
        link.stop()
        col.close()
        outbox.close()


@pytest.fixture()
def pbroker(tmp_path: Path) -> Iterator[PersistentMosquitto]:
    b = PersistentMosquitto(tmp_path / "pbroker")
    b.start()
    yield b
    b.stop()


@requires_mosquitto
def test_broker_down_during_alerts_then_back_every_alert_and_picture_arrives_alerts_first(
    pbroker: PersistentMosquitto, tmp_path: Path
) -> None:
    col = Collector(pbroker.url, f"{ROOT}/alert/#", persistent=True)
    state = AgentState(tmp_path / "state")
    outbox = Outbox(state.db_path)
    cfg = MqttConfig(broker=pbroker.url, reconnect_min_delay=0.1, reconnect_max_delay=0.5, keepalive=5)
    link = MqttLink(cfg, TOPICS, outbox, state)
    link.start()
    try:
        assert wait_until(lambda: link.connected)
        pbroker.stop()
        assert wait_until(lambda: not link.connected)
        n = cfg.inflight + 5  # more alerts than one window: pictures wait until every alert is out
        pictures = [_jpeg(i) for i in range(n)]
        stored = [link.enqueue_alert(_alert_with(p), p) for p in pictures]
        assert (outbox.depth(), outbox.snapshot_depth()) == (n, n)  # all kept on disk meanwhile
        pbroker.start()
        ids = {a.alert_id for a in stored}
        assert wait_until(lambda: col.alert_ids() == ids and set(_pictures(col)) == ids, timeout=60)
        got = _pictures(col)
        for a in stored:
            assert a.snapshot is not None and hashlib.sha256(got[a.alert_id]).hexdigest() == a.snapshot.sha256
        assert all(a.is_historical for a in col.alerts())
        kinds = ["picture" if "/alert/snapshot/" in t else "alert" for t, _p, _r in col.on("")]
        assert kinds.index("picture") > max(i for i, k in enumerate(kinds) if k == "alert")  # alerts first
        assert wait_until(lambda: outbox.depth() == 0 and outbox.snapshot_depth() == 0)
    finally:
        link.stop()
        col.close()
        outbox.close()


# -- delivery: the alert names the picture; snapshots.publish -------------------------------------


class _Replies:
    def done(self, *a: object, **kw: object) -> None:
        pass


def _mismatch(tmp_path: Path) -> Decided:
    img = np.full((40, 40, 3), 120, dtype=np.uint8)
    frame = Frame(camera="cam0", image=img, ts=time.time(), mono=time.monotonic(), index=0, bin_id="b1")
    pres = Presentation(camera="cam0", bin_id="b1", event_id="e1", kind="frame", needed=1)
    pres.add(frame, np.zeros(4, dtype=np.float32))
    d = Decision("mismatch", 2, [0.05, 0.05, 0.85, 0.05], [0, 1, 2, 3], 1, expected_qty=3, p_expected=0.05)
    ref = ModelRef(name="m", version=1, sha256="0" * 64, precision="fp32", backend="onnxruntime-cpu")
    return Decided(pres, d, ref, "frame")


@pytest.mark.parametrize("publish", [True, False])
def test_delivery_stores_the_picture_right_after_its_alert_when_publishing(
    tmp_path: Path, publish: bool
) -> None:
    state = AgentState(tmp_path / "state")
    outbox = Outbox(state.db_path)
    link = MqttLink(MqttConfig(broker="mqtt://127.0.0.1:1"), TOPICS, outbox, state)  # never started
    delivery = Delivery(
        site="s1",
        device="d1",
        sink=link,
        replies=_Replies(),
        metrics=AgentMetrics(),
        cursors=ReplayCursors(tmp_path / "replay"),
        snapshots=SnapshotStore(tmp_path / "snapshots"),
        publish_snapshots=publish,
    )
    delivery.deliver(_mismatch(tmp_path))
    t = threading.Thread(target=delivery.loop, daemon=True)
    t.start()
    delivery.close()
    t.join(30)
    assert not t.is_alive()
    rows = outbox.peek(10)
    alert = Alert.parse(rows[0].payload)
    assert alert.snapshot is not None
    saved = Path(alert.snapshot.uri.removeprefix("file://")).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == alert.snapshot.sha256 and alert.snapshot.size == len(saved)
    if publish:
        assert [(r.topic, r.snapshot) for r in rows] == [
            (TOPICS.alert_mismatch, False),
            (TOPICS.alert_snapshot(alert.alert_id), True),
        ]
        assert rows[1].id == rows[0].id + 1 and rows[1].payload == saved and rows[1].qos == 1
        assert alert.snapshot.topic == TOPICS.alert_snapshot(alert.alert_id)
    else:
        assert [r.topic for r in rows] == [TOPICS.alert_mismatch] and alert.snapshot.topic is None
    outbox.close()
