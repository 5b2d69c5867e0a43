"""One environment-variable scheme for every tool: BINWATCH_<SECTION>_<KEY> (docs/config.md);
the old names (BINWATCH__SECTION__KEY, BINWATCH_BROKER) still work for one release, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.config import AgentConfig, ConfigError, load_config
from mqttconn.env import env_name, resolve, warn_renamed
from tests.binwatch.clitree import app


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("MQTT_PASSWORD", ["mqtt", "password"]),
        ("MQTT_PASSWORD_FILE", ["mqtt", "password_file"]),
        ("MQTT_TLS_CA", ["mqtt", "tls", "ca"]),
        ("MQTT_TLS", ["mqtt", "tls"]),
        ("CAMERAS_0_SOURCE", ["cameras", "0", "source"]),
        ("CAMERAS_1", ["cameras", "1"]),
        ("CAMERAS_0_CSI_SENSOR_MODE", ["cameras", "0", "csi", "sensor_mode"]),
        ("AGENT_VERDICT_LOG_MAX_BYTES", ["agent", "verdict_log_max_bytes"]),
        ("DECISION_EVENT_MAX_AGE_S", ["decision", "event_max_age_s"]),
        ("MQTT_NOPE", None),
        ("ALLOW_FAKE_BACKEND", None),
    ],
)
def test_names_resolve_against_the_model(name: str, path: Any) -> None:
    assert resolve(AgentConfig, name.lower().split("_")) == path
    if path is not None:
        assert env_name(path) == f"BINWATCH_{name}"


def test_agent_reads_the_new_names() -> None:
    env = {
        "BINWATCH_HTTP_PORT": "9100",
        "BINWATCH_MQTT_TLS_INSECURE": "true",
        "BINWATCH_MQTT_USERNAME": "dev",
        "BINWATCH_MQTT_PASSWORD": "0123",
        "BINWATCH_CAMERAS_0": '{"name": "c0", "source": "/dev/video0"}',
        "BINWATCH_CAMERAS_0_FPS": "15",
        "BINWATCH_ALLOW_FAKE_BACKEND": "1",  # not a config key: left alone
        "BINWATCH_CONSOLE_DB": "sqlite://",  # the console's: left alone
    }
    cfg = load_config(None, env=env)
    assert cfg.http.port == 9100 and cfg.mqtt.tls.insecure
    assert cfg.mqtt.resolve_password() == "0123"
    assert cfg.cameras[0].source == "/dev/video0" and cfg.cameras[0].fps == 15


def test_agent_refuses_a_misspelt_key_of_a_section() -> None:
    with pytest.raises(ConfigError, match=r"BINWATCH_MQTT_PASWORD.*'mqtt' section"):
        load_config(None, env={"BINWATCH_MQTT_PASWORD": "x"})


def test_agent_old_names_still_work_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = load_config(None, env={"BINWATCH__MQTT__TLS__CA": "/ca.pem", "BINWATCH__HTTP__PORT": "1"})
    assert cfg.mqtt.tls.ca == Path("/ca.pem") and cfg.http.port == 1
    assert "BINWATCH__MQTT__TLS__CA is deprecated" in caplog.text
    assert "use BINWATCH_MQTT_TLS_CA" in caplog.text


def test_agent_new_name_wins_over_old() -> None:
    cfg = load_config(None, env={"BINWATCH__HTTP__PORT": "1", "BINWATCH_HTTP_PORT": "2"})
    assert cfg.http.port == 2


def test_operator_tools_read_the_new_broker_name_and_warn_about_the_old(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for cmd in (["alerts", "watch"], ["deploy", "status"]):
        params = {p.name: p for p in _command(cmd).params}
        assert params["broker"].envvar == ["BINWATCH_MQTT_BROKER", "BINWATCH_BROKER"], cmd
        assert params["username"].envvar == "BINWATCH_MQTT_USERNAME", cmd
        assert params["password"].envvar == "BINWATCH_MQTT_PASSWORD", cmd
    with caplog.at_level(logging.WARNING):
        assert warn_renamed({"BINWATCH_BROKER": "mqtt://x:1"})
    assert "BINWATCH_BROKER is deprecated" in caplog.text and "BINWATCH_MQTT_BROKER" in caplog.text
    assert not warn_renamed({"BINWATCH_MQTT_BROKER": "mqtt://x:1"})


def test_alerts_watch_takes_the_broker_from_the_new_name() -> None:
    env = {"BINWATCH_MQTT_BROKER": "mqtt://127.0.0.1:9"}  # nothing listens: the error names it
    result = CliRunner().invoke(app(), ["alerts", "watch", "--timeout", "1"], env=env)
    assert result.exit_code != 0 and "127.0.0.1:9" in result.output


def _command(path: list[str]) -> Any:
    from tests.binwatch.clitree import root

    cmd = root()
    for name in path:
        cmd = cmd.commands[name]
    return cmd
