"""Ingest through a real mosquitto: alerts deduped, snapshots before and after their alert, device
documents, hostile payloads counted, persistence across a clean stop and across a killed console
(kill -9 mid-flood: nothing lost, nothing twice), reviews sent after the broker comes back."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from console.images import FolderImages
from console.ingest import Ingest, subscriptions
from console.store import SNAPSHOT_SHA256, ConsoleStore
from contract.messages import ModelReported, Stats, Status
from contract.reviews import Review
from contract.topics import Topics
from mqttconn.config import BrokerConfig
from tests.agent.mqtt_helpers import Collector, PersistentMosquitto, make_alert, wait_until
from tests.broker import Mosquitto
from tests.console.postgres import postgres_server  # noqa: F401 (fixture)
from tests.hw import REPO

JPEG = b"\xff\xd8\xff\xe0" + b"snapshot bytes " * 20 + b"\xff\xd9"
T = Topics("s1", "d1")
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def big_queue(broker: Mosquitto) -> Mosquitto:
    """Let the broker queue a flood for an absent persistent client (the default is 1000)."""
    with broker.conf.open("a") as f:
        f.write("max_queued_messages 100000\n")
    return broker


class Publisher:
    """One QoS 1 publishing client (waits for each PUBACK)."""

    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(host, int(port))
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | dict[str, Any] | Any, retain: bool = False) -> None:
        if hasattr(payload, "to_json_bytes"):
            payload = payload.to_json_bytes()
        elif isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = big_queue(PersistentMosquitto(tmp_path / "broker"))
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ConsoleStore]:
    s = ConsoleStore.open(f"sqlite:///{tmp_path / 'console.db'}", FolderImages(tmp_path / "images"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsoleStore]:
    """The store on SQLite, then on a real PostgreSQL (tests/console/postgres.py)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'any.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    s = ConsoleStore.open(url, FolderImages(tmp_path / "any-images"))
    try:
        yield s
    finally:
        s.close()


def wait_subscribed(pub: Publisher, store: ConsoleStore, device: str = "probe") -> None:
    """Publish a status until the console has stored it (its subscriptions are in place)."""

    def stored() -> bool:
        pub.send(Topics("s1", device).status, Status(state="online", session=1, ts=NOW, agent_version="1"))
        return wait_until(lambda: any(d.device == device for d in store.devices()), timeout=0.5)

    assert wait_until(stored, timeout=30), "the console never stored the probe status"


def start_ingest(url: str, store: ConsoleStore, **kw: Any) -> tuple[Ingest, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    kw.setdefault("client_id", f"console-{uuid.uuid4().hex[:8]}")
    protocol = kw.pop("protocol", "5")
    ing = Ingest(
        BrokerConfig(broker=url, protocol=protocol), store, on_event=lambda k, d: events.append((k, d)), **kw
    )
    ing.start()
    return ing, events


def snap() -> dict[str, Any]:
    return {"uri": "file:///s.jpg", "sha256": hashlib.sha256(JPEG).hexdigest(), "size": len(JPEG)}


def test_subscriptions_cover_one_site_or_all() -> None:
    assert subscriptions("binwatch/v1")[0] == "binwatch/v1/+/+/alert/mismatch"
    subs = subscriptions("p/v1", ["dc1", "dc2"])
    assert "p/v1/dc2/+/alert/snapshot/+" in subs and "p/v1/dc1/+/model/reported" in subs and len(subs) == 10
    with pytest.raises(ValueError):
        subscriptions("binwatch/v1", ["a/b"])


def test_alerts_snapshots_and_devices_are_stored(broker: Mosquitto, any_store: ConsoleStore) -> None:
    store = any_store
    ing, events = start_ingest(broker.url, store)
    pub = Publisher(broker.url)
    try:
        wait_subscribed(pub, store)
        assert ing.connected and ing.last_error == ""
        a, b = make_alert(snapshot=snap()), make_alert(snapshot=snap(), bin_id="bin-2")
        pub.send(T.alert_mismatch, a)
        pub.send(T.alert_mismatch, a)  # at-least-once: a re-delivery
        pub.send(T.alert_snapshot(b.alert_id), JPEG)  # before its alert
        pub.send(T.alert_mismatch, b)
        pub.send(T.alert_snapshot(a.alert_id), JPEG)  # after its alert
        pub.send(T.stats, Stats(ts=NOW, uptime_s=5.0, fps=3.0), retain=True)
        pub.send(T.model_reported, ModelReported(version=2, state="active", ts=NOW), retain=True)
        pub.send(T.status, Status(state="online", session=4, ts=NOW, agent_version="1"), retain=True)

        def done() -> bool:
            d = [x for x in store.devices() if x.device == "d1"]
            rows = store.alerts()
            return (
                bool(d and d[0].status and d[0].stats and d[0].model)
                and sum(r.has_snapshot for r in rows) == 2
            )

        assert wait_until(done), (store.alerts(), store.devices())
        assert {r.alert.alert_id for r in store.alerts()} == {a.alert_id, b.alert_id}
        assert store.snapshot(a.alert_id) == JPEG and store.snapshot(b.alert_id) == JPEG
        (d1,) = [x for x in store.devices() if x.device == "d1"]
        assert d1.online is True and d1.session == 4 and d1.model.version == 2 and d1.stats.fps == 3.0
        assert store.invalid_counts() == {}
        kinds = [k for k, _ in events]
        assert (
            kinds.count("alert") == 2
            and kinds.count("snapshot") == 2
            and ("broker", {"connected": True, "error": ""}) in events
        )
        assert {d["alert_id"] for k, d in events if k == "alert"} == {a.alert_id, b.alert_id}
    finally:
        pub.close()
        ing.stop()
    assert ("broker", {"connected": False, "error": ""}) in events


def test_hostile_messages_are_counted_and_the_ingest_goes_on(
    broker: Mosquitto, any_store: ConsoleStore
) -> None:
    store = any_store
    ing, _ = start_ingest(broker.url, store, max_payload=4096, max_snapshot=1024)
    pub = Publisher(broker.url)
    try:
        wait_subscribed(pub, store)
        known = make_alert(snapshot=snap())
        pub.send(T.alert_mismatch, known)
        no_snap = make_alert()
        pub.send(T.alert_mismatch, no_snap)
        hostile: list[tuple[str, bytes]] = [
            (T.alert_mismatch, b"{not json"),
            (T.alert_mismatch, b"\xff\xfe\x00"),
            (T.alert_mismatch, json.dumps({"schema": "binwatch.alert", "seq": -1}).encode()),
            (T.alert_mismatch, b'{"x": "' + b"a" * 5000 + b'"}'),
            (T.alert_mismatch, b""),
            (Topics("s1", "d2").alert_mismatch, make_alert(device="d1").to_json_bytes()),
            (T.alert_snapshot(known.alert_id), JPEG[:-1] + b"\x00"),  # sha256 differs
            (T.alert_snapshot(no_snap.alert_id), JPEG),  # the alert names no snapshot
            (T.alert_snapshot(str(uuid.uuid4())), b"GIF89a not a jpeg"),
            (T.alert_snapshot(str(uuid.uuid4())), b"\xff\xd8" + b"x" * 2000),
            (T.alert_snapshot("NOT-A-UUID"), JPEG),
            (T.status, json.dumps({"schema": "binwatch.status", "state": "dancing"}).encode()),
            (T.stats, b"[1, 2]"),
            (T.model_reported, b"null"),
            ("binwatch/v1/s1/d1/alert/snapshot/..", JPEG),
        ]
        for topic, payload in hostile:
            pub.send(topic, payload)
        good = make_alert()
        pub.send(T.alert_mismatch, good)
        assert wait_until(lambda: store.alert(good.alert_id) is not None)
        assert store.invalid_counts() == {
            "not_json": 2,
            "bad_alert": 1,
            "oversized": 2,
            "empty": 1,
            "topic_mismatch": 1,
            SNAPSHOT_SHA256: 2,
            "not_jpeg": 1,
            "bad_topic": 2,
            "bad_status": 1,
            "bad_stats": 1,
            "bad_model_reported": 1,
        }
        assert not store.alert(known.alert_id).has_snapshot and not store.alert(no_snap.alert_id).has_snapshot
        assert ing.connected
    finally:
        pub.close()
        ing.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_stopped_console_gets_what_was_published_meanwhile(
    broker: Mosquitto, store: ConsoleStore, protocol: str
) -> None:
    ing, _ = start_ingest(broker.url, store, client_id="console-keep", protocol=protocol)
    pub = Publisher(broker.url)
    try:
        wait_subscribed(pub, store)
        ing.stop()
        meanwhile = [make_alert(seq=i) for i in range(30)]
        for a in meanwhile:
            pub.send(T.alert_mismatch, a)
        ing, _ = start_ingest(broker.url, store, client_id="console-keep", protocol=protocol)
        ids = {a.alert_id for a in meanwhile}
        assert wait_until(lambda: ids <= {r.alert.alert_id for r in store.alerts(limit=100)})
    finally:
        pub.close()
        ing.stop()


INGEST_SCRIPT = """
import sys, time
from console.images import FolderImages
from console.ingest import Ingest
from console.store import ConsoleStore
from mqttconn.config import BrokerConfig
db, images, url = sys.argv[1:4]
store = ConsoleStore.open(db, FolderImages(images))
Ingest(BrokerConfig(broker=url), store, client_id="console-killed").start()
while True:
    time.sleep(1)
"""


def test_killed_console_loses_nothing_and_stores_nothing_twice(broker: Mosquitto, tmp_path: Path) -> None:
    db, images = f"sqlite:///{tmp_path / 'killed.db'}", tmp_path / "killed-images"

    def console() -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen(
            [sys.executable, "-c", INGEST_SCRIPT, db, str(images), broker.url], cwd=REPO, env=env
        )

    proc = console()
    store = ConsoleStore.open(db, FolderImages(images))
    pub = Publisher(broker.url)
    try:
        wait_subscribed(pub, store)
        flood = [make_alert(seq=i) for i in range(1500)]
        sender = threading.Thread(target=lambda: [pub.send(T.alert_mismatch, a) for a in flood])
        sender.start()
        assert wait_until(lambda: len(store.alerts(limit=1000)) >= 200)
        proc.send_signal(signal.SIGKILL)  # mid-flood: no DISCONNECT, unacknowledged messages in flight
        proc.wait()
        sender.join()
        stored_before = len(store.alerts(limit=1000))
        assert stored_before < len(flood), "the flood ended before the kill: the test proves nothing"
        proc = console()
        ids = {a.alert_id for a in flood}

        def all_there() -> bool:
            return ids <= {r.alert.alert_id for r in store.alerts(limit=1000) + store_all(store)}

        assert wait_until(all_there, timeout=60)
        seqs = sorted(r.alert.seq for r in store_all(store) if r.alert.alert_id in ids)
        assert seqs == list(range(len(flood)))  # each exactly once
    finally:
        pub.close()
        proc.kill()
        proc.wait()
        store.close()


def store_all(store: ConsoleStore) -> list[Any]:
    rows, before = [], None
    while True:
        page = store.alerts(limit=1000, before=before)
        rows.extend(page)
        if len(page) < 1000:
            return rows
        before = page[-1].received_ts


def test_review_sent_while_the_broker_is_down_arrives_after_it_returns(
    broker: Mosquitto, store: ConsoleStore
) -> None:
    ing, events = start_ingest(broker.url, store)
    reviews_seen = Collector(broker.url, "binwatch/v1/+/+/alert/review", persistent=True)
    pub = Publisher(broker.url)
    try:
        wait_subscribed(pub, store)
        a = make_alert()
        store.add_alert(a)
        where = {"site": "s1", "device": "d1", "camera": "cam0", "bin_id": a.bin_id}
        r1 = Review(alert_id=a.alert_id, decision="false_alarm", reviewer="ann", ts=NOW, **where)
        store.add_review(r1)
        assert ing.publish_review(r1) is True
        assert wait_until(lambda: store.unpublished_reviews() == [])
        assert [Review.parse(p) for _t, p, _r in reviews_seen.on("/alert/review")] == [r1]
        assert ("review", {"alert_id": a.alert_id}) in events
        pub.close()
        broker.stop()
        assert wait_until(lambda: not ing.connected)
        r2 = r1.model_copy(update={"decision": "confirmed", "actual_qty": 4, "ts": NOW.replace(minute=9)})
        store.add_review(r2)
        assert ing.publish_review(r2) is False  # not connected: sent after the reconnect
        assert ing.last_error
        broker.start()
        assert wait_until(lambda: len(reviews_seen.on("/alert/review")) == 2)
        assert Review.parse(reviews_seen.on("/alert/review")[1][1]) == r2
        assert wait_until(lambda: store.unpublished_reviews() == [])
        assert [r.published for r in store.reviews(a.alert_id)] == [True, True]
        pub = Publisher(broker.url)
    finally:
        pub.close()
        reviews_seen.close()
        ing.stop()


def test_ingest_started_while_the_broker_is_down_connects_when_it_comes(
    broker: Mosquitto, store: ConsoleStore
) -> None:
    broker.stop()
    events: list[tuple[str, dict[str, Any]]] = []
    cfg = BrokerConfig(broker=broker.url, reconnect_min_delay=0.5, reconnect_max_delay=1.0)
    ing = Ingest(cfg, store, client_id="console-early", on_event=lambda k, d: events.append((k, d)))
    ing.start()
    pub = None
    try:
        assert wait_until(lambda: ing.last_error != "")
        assert not ing.connected and ("broker", {"connected": True, "error": ""}) not in events
        broker.start()
        pub = Publisher(broker.url)
        wait_subscribed(pub, store)
        assert ing.connected and ("broker", {"connected": True, "error": ""}) in events
    finally:
        if pub is not None:
            pub.close()
        ing.stop()


def test_sites_limit_what_is_stored(broker: Mosquitto, store: ConsoleStore) -> None:
    ing, _ = start_ingest(broker.url, store, sites=["s2"])
    pub = Publisher(broker.url)
    try:
        probe = Topics("s2", "probe").status
        status = Status(state="online", session=1, ts=NOW, agent_version="1")
        assert wait_until(
            lambda: pub.send(probe, status) or wait_until(store.devices, timeout=0.5), timeout=30
        )
        other, mine = make_alert(site="s1"), make_alert(site="s2")
        pub.send(Topics("s1", "d1").alert_mismatch, other)
        pub.send(Topics("s2", "d1").alert_mismatch, mine)  # after the other: delivered in order
        assert wait_until(lambda: store.alert(mine.alert_id) is not None)
        assert store.alert(other.alert_id) is None and store.count_alerts() == 1
        assert [d.site for d in store.devices()] == ["s2"]
    finally:
        pub.close()
        ing.stop()
