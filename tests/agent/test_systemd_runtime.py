"""A running agent talks to systemd (Type=notify): READY once counting, WATCHDOG while healthy,
STOPPING on a clean stop. systemd is stood in for by a real unix datagram socket in NOTIFY_SOCKET,
read the way systemd reads it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import agent_config
from tests.agent.mqtt_helpers import wait_until


@pytest.mark.mqtt
def test_agent_notifies_ready_watchdog_and_stopping(
    mosquitto: Any,
    tiny_bundle: Path,
    synth_bins: Path,
    state_dir: Path,
    make_runtime: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    got: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                got.extend(sock.recv(4096).decode().splitlines())
            except (TimeoutError, BlockingIOError):
                return got

    try:
        cfg = agent_config(bundle=tiny_bundle, state_dir=state_dir, broker=mosquitto.url, replay=synth_bins)
        rt = make_runtime(cfg)
        assert wait_until(lambda: "READY=1" in drain())
        assert wait_until(lambda: drain().count("WATCHDOG=1") >= 2)
        rt.stop()
        assert "STOPPING=1" in drain()
        assert got.index("READY=1") < got.index("WATCHDOG=1") < got.index("STOPPING=1")
    finally:
        sock.close()
