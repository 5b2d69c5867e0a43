"""Test helpers for the delivery tests: alert factory, a one-shot publisher, a paho subscriber that
collects messages, bounded polling, and a mosquitto that keeps sessions across restarts.

Used by tests/agent/test_mqtt_link.py, test_delivery_faults.py and test_alerts_watch.py (and free
for the agent's end-to-end tests).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contract.messages import Alert, ModelRef
from tests.broker import Mosquitto

WAIT_S = 30.0
ROOT = "binwatch/v1/s1/d1"  # the topic root of the agents the tests configure (site s1, device d1)


def wait_until(pred: Callable[[], Any], timeout: float = WAIT_S, interval: float = 0.05) -> Any:
    """Poll ``pred`` until it is truthy (returned) or ``timeout`` passes (then its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def publish(url: str, topic: str, payload: bytes | dict[str, Any], retain: bool = False) -> None:
    """One QoS 1 message to the broker at ``url`` (a dict is sent as JSON)."""
    import paho.mqtt.publish as single

    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    single.single(topic, data, qos=1, retain=retain, hostname=host, port=int(port))


def make_alert(site: str = "s1", device: str = "d1", **kw: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": str(uuid.uuid4()),
        "seq": 0,
        "session": 0,
        "site": site,
        "device": device,
        "camera": "cam0",
        "bin_id": "bin-1",
        "frame_ts": datetime.now(timezone.utc),
        "expected_qty": 3,
        "predicted_qty": 2,
        "p_expected": 0.05,
        "distribution": {"2": 0.9, "3": 0.05, "4": 0.05},
        "frames": 1,
        "model": ModelRef(name="m", version=1, sha256="0" * 64, precision="int8", backend="onnxruntime-cpu"),
    }
    fields.update(kw)
    return Alert(**fields)


class Collector:
    """A subscriber (QoS 1) that records every message; reconnects and resubscribes by itself.

    ``persistent=True`` uses a persistent session (clean_session false), so a broker with
    persistence queues what is published while this subscriber is away (e.g. across a restart).
    """

    def __init__(self, url: str, topic: str = "binwatch/#", *, persistent: bool = False) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        cid = f"collector-{uuid.uuid4().hex[:8]}" if not persistent else f"collector-p-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not persistent)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_disconnect = lambda *a: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port), keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT_S), "collector could not subscribe"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, suffix: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def alerts(self) -> list[Alert]:
        return [Alert.parse(p) for _t, p, _r in self.on("/alert/mismatch")]

    def alert_ids(self) -> set[str]:
        return {a.alert_id for a in self.alerts()}

    def statuses(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _t, p, _r in self.on("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(url: str, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on ``topic`` now (None if there is none)."""
    c = Collector(url, topic)
    try:
        wait_until(lambda: c.on(topic.rsplit("/", 1)[-1]), timeout=timeout)
        msgs = [m for m in c.on(topic.rsplit("/", 1)[-1]) if m[2]]
        return msgs[-1][1] if msgs else None
    finally:
        c.close()


class PersistentMosquitto(Mosquitto):
    """A mosquitto that keeps sessions (and queued QoS 1 messages) across stop()/start().

    Used where a test's subscriber must not miss what the agent publishes while the subscriber is
    reconnecting after a broker restart; the agent itself gets no help from it (its alerts during
    the outage never reached the broker).
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        text = self.conf.read_text().replace(
            "persistence false",
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 0",
        )
        self.conf.write_text(text)
