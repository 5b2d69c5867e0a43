"""Simulated devices for the push tests: a TEST FAKE at the ``model/desired`` -> ``model/reported``
seam, on a real mosquitto.

``FakeDevices`` publishes a retained ``status`` (online, with the model it "runs") for each of its
devices, follows their retained ``model/desired`` like an agent does, and answers each desired
state on the retained ``model/reported`` with the rollout id: ``downloading``, then ``active`` on
the desired version, or ``failed`` for the devices in ``fail``; the devices in ``trial_fail`` report
``rolled_back`` 0.3 s after ``active`` (as an agent whose trial window failed). Devices in ``hold`` record the
desired state and answer only when :meth:`release` is called; devices in ``silent`` never answer.
An empty desired payload (cleared) is recorded as ``None``. Nothing here fetches or checks a
bundle: the real agent path is in test_push_agents.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contract.messages import ModelDesired, ModelRef, ModelReported, Status

PREFIX = "binwatch/v1"


class FakeDevices:
    def __init__(
        self,
        url: str,
        site: str,
        devices: list[str],
        *,
        running: int = 1,
        fail: tuple[str, ...] = (),
        hold: tuple[str, ...] = (),
        silent: tuple[str, ...] = (),
        trial_fail: tuple[str, ...] = (),
        states: Optional[dict[str, str]] = None,
    ) -> None:
        self.site = site
        self.devices = list(devices)
        self.running = {d: running for d in devices}
        self.fail, self.hold, self.silent = set(fail), set(hold), set(silent)
        self.trial_fail = set(trial_fail)
        self.states = states or {}  # device -> status state (default online)
        self.received: list[tuple[float, str, Optional[ModelDesired]]] = []  # (time, device, desired)
        self.answered: list[tuple[float, str, str]] = []  # (time, device, state)
        self._held: dict[str, ModelDesired] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port), keepalive=10)
        self.client.loop_start()
        assert self._ready.wait(10), "the fake devices could not subscribe"

    def topic(self, device: str, leaf: str) -> str:
        return f"{PREFIX}/{self.site}/{device}/{leaf}"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        for d in self.devices:
            self._status(d)
        client.subscribe([(self.topic(d, "model/desired"), 1) for d in self.devices])

    def _status(self, device: str) -> None:
        model = ModelRef(
            name="tiny-count", version=self.running[device], sha256="0" * 64, precision="fp32", backend="fake"
        )
        status = Status(
            state=self.states.get(device, "online"),
            session=1,
            ts=datetime.now(timezone.utc),
            agent_version="fake",
            model=model,
        )
        self.client.publish(self.topic(device, "status"), status.to_json_bytes(), qos=1, retain=True)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        device = msg.topic.split("/")[-3]
        desired = ModelDesired.parse(msg.payload) if msg.payload else None
        with self._lock:
            self.received.append((time.monotonic(), device, desired))
        if desired is None or device in self.silent:
            return
        if device in self.hold:
            self._held[device] = desired
            return
        self._answer(device, desired)

    def _answer(self, device: str, desired: ModelDesired) -> None:
        self._report(device, desired, "downloading", desired.bundle_url)
        if device in self.fail:
            self._report(device, desired, "failed", "fake: refused (this device is set to fail)")
            return
        self.running[device] = desired.version
        self._report(device, desired, "active", "")
        self._status(device)
        if device in self.trial_fail:
            why = "fake: trial failed (health check)"
            threading.Timer(0.3, self._report, (device, desired, "rolled_back", why)).start()

    def _report(self, device: str, desired: ModelDesired, state: str, detail: str) -> None:
        report = ModelReported(
            version=desired.version,
            state=state,  # type: ignore[arg-type]
            detail=detail,
            ts=datetime.now(timezone.utc),
            rollout_id=desired.rollout_id,
        )
        self.client.publish(self.topic(device, "model/reported"), report.to_json_bytes(), qos=1, retain=True)
        with self._lock:
            self.answered.append((time.monotonic(), device, state))

    def release(self, device: str) -> None:
        """A held device answers the desired state it got (and the next ones)."""
        self.hold.discard(device)
        desired = self._held.pop(device, None)
        if desired is not None:
            self._answer(device, desired)

    # -- what happened ------------------------------------------------------------------------------
    def got(self, device: str) -> list[Optional[ModelDesired]]:
        with self._lock:
            return [d for _t, dev, d in self.received if dev == device]

    def first_received(self, device: str, version: int) -> float:
        with self._lock:
            return min(t for t, dev, d in self.received if dev == device and d and d.version == version)

    def answered_at(self, device: str, state: str) -> float:
        with self._lock:
            return min(t for t, dev, s in self.answered if dev == device and s == state)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
