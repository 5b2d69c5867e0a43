"""MQTT side of ``bench/soak.py``: a mosquitto restarted on a schedule, the ``bin`` event publisher
and the persistent-session subscriber that counts what the agent delivered.

Not a package name (``bench/`` is first on ``sys.path`` when a bench script runs).
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
import uuid
from collections import Counter, deque
from pathlib import Path
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract.messages import BinEvent
from contract.topics import Topics
from tests.broker import Mosquitto


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


class RestartingBroker:
    """A mosquitto with persistence on (sessions and their queued QoS 1 messages survive a restart),
    stopped every ``restart_s`` seconds, left down ``down_s`` seconds and started on the same port."""

    def __init__(self, workdir: Path, restart_s: float, down_s: float) -> None:
        self.m = Mosquitto(workdir)
        text = self.m.conf.read_text().replace(
            "persistence false",
            f"persistence true\npersistence_location {self.m.workdir}/\nautosave_interval 0",
        )
        self.m.conf.write_text(text)
        self.restart_s, self.down_s = restart_s, down_s
        self.restarts: list[dict[str, float]] = []  # wall-clock times the broker went down and up
        self.up = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return self.m.url

    def start(self) -> None:
        self.m.start()
        self.up = True

    def start_restarts(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="soak-broker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Down at a fixed period from the first call: t0 + restart_s, t0 + 2 * restart_s, ..."""
        t0, k = time.monotonic(), 1
        while not self._stop.wait(max(0.0, t0 + k * self.restart_s - time.monotonic())):
            k += 1
            down = time.time()
            self.up = False
            self.m.stop()
            self._stop.wait(self.down_s)  # cut short at the end of the run, the broker still comes back
            self.m.start()
            self.up = True
            self.restarts.append({"down": down, "up": time.time()})

    def stop_restarts(self) -> None:
        """No more restarts; returns once the broker is up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.down_s + 30)

    def stop(self) -> None:
        self.stop_restarts()
        self.m.stop()
        self.up = False


def _client(client_id: str, clean_start: bool) -> tuple[mqtt.Client, Properties]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    if not clean_start:
        props.SessionExpiryInterval = 3600
    return c, props


class EventPublisher:
    """Sends a ``bin`` event (unique ``event_id``, QoS 1) every ``1/rate`` s from its own thread.

    Events made while the broker is away wait in a queue and go out after the reconnect. An event
    counts as sent when the broker acknowledged it (PUBACK); one in flight when the connection
    broke is sent again (the agent may see it twice; outcomes are counted by ``event_id``). Each
    connection uses a fresh client so nothing is re-sent behind the queue's back."""

    def __init__(
        self, url: str, topics: Topics, camera: str, bin_ids: list[str], rate: float, frames: int
    ) -> None:
        self.url, self.topic = url, topics.bin
        self.camera, self.bin_ids, self.rate, self.frames = camera, bin_ids, rate, frames
        self.rng = random.Random(7)
        self.generated = 0
        self.sent: dict[str, float] = {}  # event_id -> when the broker acknowledged it
        self.pending: deque[tuple[str, bytes]] = deque()
        self.inflight: dict[int, tuple[str, bytes]] = {}
        self.connects = 0
        self.producing = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._client: Optional[mqtt.Client] = None
        self._thread = threading.Thread(target=self._run, name="soak-events", daemon=True)

    def start(self) -> None:
        self.producing.set()
        self._thread.start()

    def stop_producing(self) -> None:
        self.producing.clear()

    def idle(self) -> bool:
        return not self.pending and not self.inflight

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._disconnect()

    def _make(self) -> tuple[str, bytes]:
        self.generated += 1
        event_id = f"soak-{self.generated:07d}-{uuid.uuid4().hex[:8]}"
        ev = BinEvent(
            bin_id=self.rng.choice(self.bin_ids),
            camera=self.camera,
            event_id=event_id,
            expected_qty=self.rng.randint(0, 5),
            frames=self.frames,
        )
        return event_id, ev.model_dump_json(exclude_none=True).encode()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if not self.producing.is_set():
                next_t = now
            while self.producing.is_set() and now >= next_t:
                self.pending.append(self._make())
                next_t += 1.0 / self.rate
            self._take_acks()
            if self._client is None or not self._connected.is_set():
                self._reconnect()
            else:
                self._flush()
            self._stop.wait(0.05)

    def _take_acks(self) -> None:
        while True:
            try:
                mid, ok = self._acks.get_nowait()
            except queue.Empty:
                return
            item = self.inflight.pop(mid, None)
            if item is None:
                continue
            if ok:
                self.sent.setdefault(item[0], time.time())
            else:
                self.pending.appendleft(item)

    def _flush(self) -> None:
        assert self._client is not None
        while self.pending and len(self.inflight) < 20:
            item = self.pending.popleft()
            info = self._client.publish(self.topic, item[1], qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.pending.appendleft(item)
                return
            self.inflight[info.mid] = item

    def _reconnect(self) -> None:
        self._disconnect()
        c, props = _client(f"soak-pub-{uuid.uuid4().hex[:8]}", clean_start=True)
        c.on_connect = lambda cl, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        c.on_disconnect = lambda *a: self._connected.clear()
        c.on_publish = lambda cl, u, mid, rc, p: self._acks.put((mid, not rc.is_failure))
        try:
            c.connect(*_host_port(self.url), keepalive=10, clean_start=True, properties=props)
        except OSError:
            self._stop.wait(0.5)
            return
        c.loop_start()
        self._client = c
        if self._connected.wait(5):
            self.connects += 1

    def _disconnect(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        self._connected.clear()
        c.disconnect()
        c.loop_stop()
        self._take_acks()
        for item in sorted(self.inflight.items()):  # the broker may not have them: send again, in order
            self.pending.appendleft(item[1])
        self.inflight.clear()


class SoakSubscriber:
    """A persistent MQTT 5 session (fixed client id, ``clean_start`` false, session expiry 1 h):
    the broker queues QoS 1 alerts and outcomes while this client is away (across its restarts,
    persistence on). Counts alerts by ``seq`` per device (and ``alert_id``), outcomes by
    ``event_id``, keeps the latest ``stats`` and ``status``."""

    def __init__(self, url: str, topics: Topics, client_id: str = "binwatch-soak-sub") -> None:
        self.topics = topics
        self._lock = threading.Lock()
        self.alert_seqs: dict[str, set[int]] = {}
        self.alert_ids: set[str] = set()
        self.alert_messages = 0
        self.outcomes: dict[str, str] = {}
        self.outcome_messages = 0
        self.outcome_kinds: Counter[str] = Counter()
        self.failed_reasons: Counter[str] = Counter()  # by the reason's first words (no event ids)
        self.stats: Optional[dict[str, Any]] = None
        self.stats_at = 0.0
        self.status: Optional[dict[str, Any]] = None
        self.connects = 0
        self.bad = 0
        self.subscribed = threading.Event()
        self.c, props = _client(client_id, clean_start=False)
        self.c.reconnect_delay_set(0.5, 2)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(*_host_port(url), keepalive=10, clean_start=False, properties=props)
        self.c.loop_start()
        if not self.subscribed.wait(30):
            raise RuntimeError(f"soak subscriber could not subscribe at {url}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        t = self.topics
        client.subscribe([(t.alert_mismatch, 1), (t.bin_outcome, 1), (t.stats, 0), (t.status, 1)])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            self.bad += 1
            return
        t = self.topics
        with self._lock:
            if msg.topic == t.alert_mismatch:
                self.alert_messages += 1
                self.alert_seqs.setdefault(str(data.get("device")), set()).add(int(data["seq"]))
                self.alert_ids.add(str(data["alert_id"]))
            elif msg.topic == t.bin_outcome:
                self.outcome_messages += 1
                eid = str(data["event_id"])
                if eid not in self.outcomes:
                    self.outcome_kinds[str(data.get("outcome"))] += 1
                    if data.get("outcome") == "failed":
                        self.failed_reasons[" ".join(str(data.get("reason", "")).split()[:3])] += 1
                self.outcomes[eid] = str(data.get("outcome"))
            elif msg.topic == t.stats:
                self.stats, self.stats_at = data, time.time()
            elif msg.topic == t.status:
                self.status = data

    def received_seqs(self) -> set[int]:
        with self._lock:
            return set().union(*self.alert_seqs.values()) if self.alert_seqs else set()

    def seq_gaps(self) -> dict[str, int]:
        """Per device: seqs missing between the lowest and highest received."""
        with self._lock:
            return {d: max(s) - min(s) + 1 - len(s) for d, s in self.alert_seqs.items() if s}

    def outcome_ids(self) -> set[str]:
        with self._lock:
            return set(self.outcomes)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
