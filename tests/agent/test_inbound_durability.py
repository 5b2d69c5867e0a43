"""Inbound bin events are not lost (issue 11): a persistent session, acknowledgement after the
journal has the event, redelivery recognised, and every event ending in ``bin/outcome``.

Real parts: mosquitto, the agent as a subprocess killed with SIGKILL, SQLite journal, ONNX Runtime.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from agent.intake.journal import EventJournal
from contract.base import utcnow
from contract.messages import BinEvent, BinOutcome
from tests.agent.conftest import event_camera
from tests.agent.mqtt_helpers import ROOT, Collector, wait_until
from tests.hw import REPO, requires_mosquitto

pytestmark = requires_mosquitto

CAMERAS = ("cam0", "cam1", "cam2", "cam3")


def _config(path: Path, *, bundle: Path, replay: Path, state: Path, broker: str) -> Path:
    data: dict[str, Any] = {
        "agent": {"site": "s1", "device": "d1", "state_dir": str(state), "verdict_log": True},
        "mqtt": {"broker": broker, "reconnect_min_delay": 0.2, "reconnect_max_delay": 1.0, "keepalive": 5},
        "model": {"bundle": str(bundle), "backend": "onnxruntime", "threads": 1, "batch": 4},
        "decision": {"frames_per_event": 1, "event_timeout_s": 5, "event_max_age_s": 60},
        "http": {"port": 0},
        "cameras": [event_camera(replay, name=c, rate=20) for c in CAMERAS],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _spawn(cfg: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


class _Publisher:
    """Publishes bin events QoS 1 and counts those the broker acknowledged."""

    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wms", protocol=mqtt.MQTTv5)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def send(self, event: BinEvent) -> None:
        info = self.client.publish(f"{ROOT}/bin", event.to_json_bytes(), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def outcomes(mosquitto: Any) -> Iterator[Collector]:
    col = Collector(mosquitto.url, f"{ROOT}/bin/outcome")
    try:
        yield col
    finally:
        col.close()


def _outcomes(col: Collector) -> dict[str, list[BinOutcome]]:
    out: dict[str, list[BinOutcome]] = {}
    for _t, payload, _r in col.on("/bin/outcome"):
        o = BinOutcome.parse(payload)
        out.setdefault(o.event_id, []).append(o)
    return out


def _why_missing(missing: set[str], state: Path, log: Path) -> str:
    """The failure message: which events have no outcome, what the journal says of each, the log."""
    journal = EventJournal(state)
    try:
        known = {e: [journal.outcome(c, e) for c in CAMERAS] for e in sorted(missing)}
    finally:
        journal.close()
    text = log.read_text()
    lines = [
        ln for ln in text.splitlines() if any(e in ln for e in missing) or "WARNING" in ln or "ERROR" in ln
    ]
    return f"{len(missing)} event(s) without an outcome; journal: {known}\n" + "\n".join(lines[-60:])


def test_500_bin_events_across_a_sigkill_each_end_decided_or_reported_failed(
    mosquitto: Any, outcomes: Collector, tiny_bundle: Path, synth_bins: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    cfg = _config(
        tmp_path / "agent.yaml", bundle=tiny_bundle, replay=synth_bins, state=state, broker=mosquitto.url
    )
    log = tmp_path / "agent.log"
    agent = _spawn(cfg, log)
    pub = _Publisher(mosquitto.url)
    sent: list[str] = []
    codes: list[int] = []
    try:
        # the first SUBACK creates its subscriptions in the broker session; from then on the broker
        # queues bin events for it, also while it is dead (before, there is nothing to queue them for)
        assert wait_until(lambda: "subscribed to" in log.read_text(), timeout=60), log.read_text()
        killed = threading.Event()

        def killer() -> None:
            wait_until(lambda: len(sent) >= 150, timeout=60)
            agent.send_signal(signal.SIGKILL)
            codes.append(agent.wait(10))
            killed.set()

        t = threading.Thread(target=killer)
        t.start()
        for i in range(500):
            ev = BinEvent(
                bin_id=f"B{i:04d}",
                camera=CAMERAS[i % 4],
                event_id=f"e{i:04d}",
                expected_qty=i % 5,
                ts=utcnow(),
            )
            pub.send(ev)
            sent.append(ev.event_id)
            time.sleep(0.03)
            if i == 300:  # events 150..300 were sent while the agent was dead: the broker keeps them
                assert killed.wait(30)
                agent = _spawn(cfg, log)
        t.join(30)
        got = wait_until(lambda: set(_outcomes(outcomes)) >= set(sent) or None, timeout=180)
        assert got, _why_missing(set(sent) - set(_outcomes(outcomes)), state, log)
    finally:
        pub.close()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        finally:
            agent.kill()
    by_event = _outcomes(outcomes)
    assert set(by_event) == set(sent)
    finals = [o[-1] for o in by_event.values()]
    decided = [o for o in finals if o.outcome != "failed"]
    failed = [o for o in finals if o.outcome == "failed"]
    assert all(o.reason for o in failed)  # a failure always says why
    assert len(decided) >= 100, (len(decided), {o.reason.split(":")[0] for o in failed})
    # nothing left pending in the journal after the clean stop
    journal = EventJournal(state)
    try:
        assert journal.pending() == []
    finally:
        journal.close()
    assert codes == [-signal.SIGKILL]  # the first run died without a goodbye
