"""A broker that speaks only MQTT 3.1.1 (amqtt, the embedded demo broker): the agent, configured
for MQTT 5 (the default), falls back to 3.1.1 with a warning and delivers its alerts."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.mqtt_helpers import Collector, wait_until
from tests.broker import free_port

amqtt_broker = pytest.importorskip("amqtt.broker", reason="amqtt not installed (pip install amqtt)")


@pytest.fixture()
def amqtt_url() -> Iterator[str]:
    port = free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "auth": {"allow-anonymous": True},
        "topic-check": {"enabled": False},
    }
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        broker = amqtt_broker.Broker(config, loop=loop)
        holder["broker"] = broker
        loop.run_until_complete(broker.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30), "amqtt did not start"
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_agent_falls_back_to_311_and_delivers(
    amqtt_url: str, e2e_config: Any, replay_copy: Path, make_runtime: Any, verdict_log: Any, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    col = Collector(amqtt_url, "binwatch/#")
    try:
        cfg = e2e_config(amqtt_url, mismatched=replay_copy)
        assert cfg.mqtt.protocol == "5"
        rt = make_runtime(cfg, exit_when_done=True)
        assert wait_until(lambda: rt.link.connected, timeout=30)
        assert "speaks only MQTT 3.1.1: using it" in caplog.text
        assert wait_until(
            lambda: rt.pipeline.drained() and rt.delivery.pending() == 0 and rt.outbox.depth() == 0,
            timeout=120,
        )
        decided = {v["alert_id"] for v in verdict_log() if v["verdict"] == "mismatch"}
        assert decided
        assert wait_until(lambda: col.alert_ids() >= decided, timeout=30)
    finally:
        col.close()
