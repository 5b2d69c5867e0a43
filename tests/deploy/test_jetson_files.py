"""The Jetson files that ship in deploy/jetson/ stay usable: the example config is a valid agent
config that the shipped broker ACL accepts, and the unit keeps what the agent's systemd support needs."""

from __future__ import annotations

import configparser

from agent.config import load_config
from tests.hw import REPO

JETSON = REPO / "deploy" / "jetson"


def test_example_config_loads_and_speaks_mqtt5_as_a_site_device_user() -> None:
    cfg = load_config(JETSON / "agent.yaml")
    assert cfg.mqtt.protocol == "5"  # refused publishes are reported (docs/broker.md)
    assert cfg.mqtt.username == f"{cfg.agent.site}/{cfg.agent.device}"  # the ACL's <site>/<device> users
    assert cfg.model.backend == "tensorrt" and cfg.model.trusted_keys
    assert cfg.cameras and cfg.cameras[0].resolved_kind == "csi"


def test_unit_is_a_notify_service_with_a_watchdog_and_credentials() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(JETSON / "binwatch-agent.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["WatchdogSec"] and svc["Restart"] == "on-failure"
    assert "LoadCredential" in svc and "StateDirectory" in svc
    assert "agent run" in svc["ExecStart"]
