"""The live part of the demo: a subscriber that collects what the agent publishes (alerts, bin
outcomes, status, stats) with their arrival time, and the driver that puts bins in front of the
stand-in cameras and sends a ``bin`` event for each, as a conveyor controller would.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from contract.base import utcnow
from contract.bins import BinEvent
from contract.topics import Topics
from demo.steps import DemoError
from demo.stream import MjpegCamera
from mqttconn.client import connect_kwargs, make_client
from mqttconn.config import BrokerConfig

log = logging.getLogger(__name__)

__all__ = ["Bin", "Driver", "Monitor"]


@dataclass
class Bin:
    """One bin to present: its id and the JPEG of each view."""

    bin_id: str
    views: list[bytes]


@dataclass
class Monitor:
    """Subscribes to one site's alerts, outcomes, status and stats; thread-safe getters."""

    broker: BrokerConfig
    site: str
    on_alert: Optional[Callable[[dict[str, Any]], None]] = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = make_client(self.broker, f"binwatch-demo-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a, **k: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        root = f"{self.broker.prefix}/{self.site}/+"
        client.subscribe(
            [
                (f"{root}/alert/mismatch", 1),
                (f"{root}/bin/outcome", 1),
                (f"{root}/status", 0),
                (f"{root}/stats", 0),
            ]
        )

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        received = time.time()
        try:
            data = json.loads(msg.payload)
        except ValueError:
            log.warning("demo: unreadable message on %s", msg.topic)
            return
        parts = msg.topic[len(self.broker.prefix) + 1 :].split("/")
        device = parts[1] if len(parts) > 1 else ""
        with self._cond:
            if msg.topic.endswith("/alert/mismatch"):
                data["_received"] = received
                self.alerts.append(data)
            elif msg.topic.endswith("/bin/outcome"):
                self.outcomes[str(data.get("event_id"))] = data
            elif msg.topic.endswith("/status"):
                self.status[device] = data
            elif msg.topic.endswith("/stats"):
                self.stats[device] = data
            self._cond.notify_all()
        if msg.topic.endswith("/alert/mismatch") and self.on_alert is not None:
            self.on_alert(data)

    def start(self, timeout_s: float = 15.0) -> Monitor:
        try:
            self._client.connect(**connect_kwargs(self.broker))
        except OSError as e:
            raise DemoError(
                f"cannot connect to the broker {self.broker.broker}: {e}", "check --broker"
            ) from e
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            raise DemoError(
                f"no subscription on {self.broker.broker} within {timeout_s:.0f} s", "check the broker"
            )
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` (called under the lock) holds; False on timeout."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout_s)

    def cameras_live(self, device: str, names: Sequence[str]) -> bool:
        """Every camera of ``device`` delivers frames (its status says live, or its stats count frames)."""
        status = self.status.get(device, {}).get("cameras", {})
        stats = self.stats.get(device, {}).get("cameras", {})
        return all(
            status.get(n, {}).get("state") == "live" or stats.get(n, {}).get("frames_total", 0) > 0
            for n in names
        )

    def snapshot_alerts(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.alerts)

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class Driver:
    """Presents ``bins`` on the cameras (one thread per camera), one ``bin`` event per bin, and
    waits for each event's outcome before the next bin comes to that camera."""

    monitor: Monitor
    topics: Topics
    cameras: dict[str, MjpegCamera]
    settle_s: float = 0.5  # after a bin change, frames older than this are of the previous bin
    outcome_timeout_s: float = 30.0
    on_outcome: Optional[Callable[[str, Optional[dict[str, Any]]], None]] = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    presented: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    frames: int = 0

    def run(self, bins: Sequence[Bin]) -> float:
        """Present every bin; returns the seconds it took."""
        names = sorted(self.cameras)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for b in bins[i :: len(names)]:
                    outcome = self._present(names[i], b)
                    with lock:
                        self.presented.append(b.bin_id)
                        self.frames += len(b.views)
                        if outcome is None:
                            self.timed_out.append(b.bin_id)
                    if self.on_outcome is not None:
                        self.on_outcome(b.bin_id, outcome)
            except BaseException as e:  # reported by run()
                errors.append(e)

        t0 = time.monotonic()
        threads = [threading.Thread(target=work, args=(i,), name=f"demo-{n}") for i, n in enumerate(names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.monotonic() - t0

    def _present(self, camera: str, b: Bin) -> Optional[dict[str, Any]]:
        self.cameras[camera].show(b.views)
        time.sleep(self.settle_s)  # frames read from now on show this bin
        event_id = f"demo-{self.run_id}-{b.bin_id}"
        event = BinEvent(bin_id=b.bin_id, camera=camera, event_id=event_id, frames=len(b.views), ts=utcnow())
        self.monitor.publish(self.topics.bin, event.to_json_bytes())
        if not self.monitor.wait_for(lambda: event_id in self.monitor.outcomes, self.outcome_timeout_s):
            log.warning("bin %s: no outcome within %.0f s", b.bin_id, self.outcome_timeout_s)
            return None
        return self.monitor.outcomes[event_id]
