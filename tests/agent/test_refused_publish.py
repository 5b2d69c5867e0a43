"""A broker that refuses the agent's alerts (an ACL denial) loses nothing: with MQTT 5 (the default)
the refusal comes back in the PUBACK, the alerts stay in the outbox, are counted and shown with the
broker's reason in ``stats`` and ``/metrics``, are retried with backoff without blocking what is
behind them, and are all delivered once the ACL is fixed. Real mosquitto (ACL file, reloaded with
SIGHUP), real agent runtime, real SQLite outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import agent_config
from tests.agent.mqtt_helpers import Collector, wait_until
from tests.broker import Mosquitto
from tests.hw import requires_mosquitto

ROOT = "binwatch/v1/s1/d1"
# Anonymous clients (lines before any `user`): everyone reads; the device may write everything of
# its own but its alerts.
DENY_ALERTS = [
    "topic read binwatch/#",
    *(f"topic write {ROOT}/{t}" for t in ("status", "stats", "result", "model/reported", "cmd/+/result")),
]
ALLOW_ALERTS = [*DENY_ALERTS, f"topic write {ROOT}/alert/mismatch"]


@pytest.fixture()
def acl_broker(tmp_path: Path) -> Any:
    if requires_mosquitto.args[0]:
        pytest.skip(requires_mosquitto.kwargs["reason"])
    broker = Mosquitto(tmp_path / "broker")
    acl = tmp_path / "broker" / "acl"
    acl.write_text("\n".join(DENY_ALERTS) + "\n")
    broker.conf.write_text(broker.conf.read_text() + f"acl_file {acl}\n")
    broker.start()
    broker.acl = acl  # type: ignore[attr-defined]
    try:
        yield broker
    finally:
        broker.stop()


def test_refused_alerts_stay_counted_with_the_reason_and_arrive_once_allowed(
    acl_broker: Any, synth_bins: Path, tiny_bundle: Path, state_dir: Path, make_runtime: Any
) -> None:
    col = Collector(acl_broker.url, "binwatch/#")
    try:
        cfg = agent_config(
            bundle=tiny_bundle,
            state_dir=state_dir,
            broker=acl_broker.url,
            replay=synth_bins,
            manifest=synth_bins / "manifest-mismatch",
        )
        assert cfg.mqtt.protocol == "5"  # the default
        rt = make_runtime(cfg)
        assert wait_until(lambda: rt.capture.finished() and rt.delivery.pending() == 0, timeout=60)
        alerts = rt.metrics.counts["alerts"]
        assert alerts > 0
        assert wait_until(lambda: rt.link.counters.publish_refused >= alerts)  # each refused at least once
        assert rt.outbox.depth() == alerts and rt.link.connected  # kept; no reconnect storm
        assert col.alerts() == []  # the broker dropped them; the agent still has them

        def last_stats() -> dict[str, Any]:
            stats = col.on("/stats")
            return json.loads(stats[-1][1]) if stats else {}

        assert wait_until(lambda: last_stats().get("refused_waiting") == alerts)
        assert "Not authorized" in (last_stats().get("last_refusal") or "")
        rt.housekeeper.tick()  # refreshes the gauges (every 0.5 s anyway)
        metrics = rt.endpoints.metrics_text()[0].decode()
        assert f"binwatch_outbox_refused {float(alerts)}" in metrics
        _ok, ready = rt.endpoints.readiness()  # /readyz says it too, with the broker's reason
        assert ready["delivery"]["refused_waiting"] == alerts
        assert "Not authorized" in ready["delivery"]["last_refusal"]

        acl_broker.acl.write_text("\n".join(ALLOW_ALERTS) + "\n")  # the operator fixes the ACL
        acl_broker.reload()
        assert wait_until(lambda: len({a.alert_id for a in col.alerts()}) == alerts, timeout=60)
        assert wait_until(lambda: rt.outbox.depth() == 0)
        assert sorted(a.seq for a in col.alerts())[:alerts] == list(range(1, alerts + 1))
    finally:
        col.close()
