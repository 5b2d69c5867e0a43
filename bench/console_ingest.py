"""Console ingest throughput: alerts per second stored from a real mosquitto, against a bare paho
subscriber that stores nothing, measured side by side in one run.

    python bench/console_ingest.py  # 10,000 alerts, SQLite in a temp folder
    python bench/console_ingest.py -n 20000 --snapshots --db postgresql+psycopg://... --json

For each consumer the broker first holds a backlog: the consumer's persistent session is made
(subscribe, disconnect), ``-n`` alerts are published QoS 1 (with ``--snapshots`` each also has a
JPEG on ``alert/snapshot/<id>``), then the consumer connects and the clock runs from its start to
the last alert it has (bare: received; console: committed, as ``on_event("alert")`` reports). Both
use MQTT 5, a persistent session and QoS 1; the bare subscriber acknowledges on receipt.
Prints both rates and the ratio console / bare (goal: >= 1,000 alerts/s stored with SQLite).
(Not ``bench/console.py``: a script of that name would shadow the ``console`` package.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's packages (and tests.broker)

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from console.images import FolderImages  # noqa: E402
from console.ingest import Ingest, subscriptions  # noqa: E402
from console.store import ConsoleStore  # noqa: E402
from contract.topics import Topics  # noqa: E402
from mqttconn.config import BrokerConfig  # noqa: E402
from tests.agent.mqtt_helpers import make_alert  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402

PREFIX = "binwatch/v1"


def backlog(n: int, snapshots: bool) -> list[tuple[str, bytes]]:
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 160 + b"\xff\xd9"  # ~40 KB
    sha = hashlib.sha256(jpeg).hexdigest()
    out = []
    for i in range(n):
        dev = Topics("s1", f"d{i % 8}")
        snap = {"uri": "file:///s.jpg", "sha256": sha, "size": len(jpeg)} if snapshots else None
        a = make_alert(device=dev.device, seq=i, snapshot=snap)
        out.append((dev.alert_mismatch, a.to_json_bytes()))
        if snapshots:
            out.append((dev.alert_snapshot(a.alert_id), jpeg))
    return out


def publish_all(port: int, items: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(t, p, qos=1) for t, p in items]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def bare_client(port: int, cid: str, on_message: Any) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(s, 1) for s in subscriptions(PREFIX)])
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    if not subscribed.wait(30):
        raise RuntimeError("bare subscriber: no SUBACK")
    return c


def run_bare(port: int, items: list[tuple[str, bytes]], n: int) -> float:
    cid = f"bench-bare-{uuid.uuid4().hex[:6]}"
    bare_client(port, cid, lambda *a: None).disconnect()
    publish_all(port, items)
    count, done = [0], threading.Event()

    def on_message(cl: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/alert/mismatch"):
            count[0] += 1
            if count[0] == n:
                done.set()

    t0 = time.perf_counter()
    c = bare_client(port, cid, on_message)
    if not done.wait(600):
        raise RuntimeError(f"bare subscriber got {count[0]} of {n}")
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / elapsed


def run_console(port: int, items: list[tuple[str, bytes]], n: int, db: str, images: Path) -> float:
    store = ConsoleStore.open(db, FolderImages(images))
    cfg = BrokerConfig(broker=f"mqtt://127.0.0.1:{port}")
    up = threading.Event()
    ing = Ingest(cfg, store, client_id="bench-console", on_event=lambda k, d: k == "device" and up.set())
    ing.start()
    probe = [(Topics("s1", "probe").status, _status())]
    while not up.is_set():  # the session exists once a probe is stored
        publish_all(port, probe)
        up.wait(0.5)
    ing.stop()
    publish_all(port, items)
    count, done = [0], threading.Event()

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "alert":
            count[0] += 1
            if count[0] == n:
                done.set()

    t0 = time.perf_counter()
    ing = Ingest(cfg, store, client_id="bench-console", on_event=on_event)
    ing.start()
    if not done.wait(600):
        raise RuntimeError(f"console stored {count[0]} of {n}")
    elapsed = time.perf_counter() - t0
    ing.stop()
    stored = store.count_alerts()
    store.close()
    if stored != n:
        raise RuntimeError(f"the store holds {stored} alerts, expected {n}")
    return n / elapsed


def _status() -> bytes:
    from contract.base import utcnow
    from contract.messages import Status

    return Status(state="online", session=1, ts=utcnow(), agent_version="bench").to_json_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="alerts per consumer")
    ap.add_argument("--snapshots", action="store_true", help="a ~40 KB JPEG per alert too")
    ap.add_argument("--db", default=None, help="database URL (default: SQLite in a temp folder)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        with broker.conf.open("a") as f:
            f.write("max_queued_messages 0\nmax_queued_bytes 0\n")
        broker.start()
        try:
            items = backlog(args.n, args.snapshots)
            bare = run_bare(broker.port, items, args.n)
            db = args.db or f"sqlite:///{Path(tmp) / 'console.db'}"
            console = run_console(broker.port, items, args.n, db, Path(tmp) / "images")
        finally:
            broker.stop()
    result = {
        "alerts": args.n,
        "snapshots": args.snapshots,
        "db": "sqlite" if args.db is None else args.db.split(":", 1)[0],
        "bare_alerts_per_s": round(bare, 1),
        "console_alerts_per_s": round(console, 1),
        "ratio": round(console / bare, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"bare subscriber : {bare:10.1f} alerts/s (received, nothing stored)")
    print(f"console ingest  : {console:10.1f} alerts/s (stored and committed, {result['db']})")
    print(f"ratio console / bare: {result['ratio']:.3f}   goal: >= 1,000 alerts/s stored")


if __name__ == "__main__":
    main()
