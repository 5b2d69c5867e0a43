"""The console's smaller parts: config loading (file < env < flags, unknown keys refused), the session
key file, the listening socket, the distribution chart and the fleet rows."""

from __future__ import annotations

import socket
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.console.browser import skip_without_console_extra

skip_without_console_extra()


from console.config import ConfigError, load_config  # noqa: E402
from console.store import DeviceRow  # noqa: E402
from console.web.server import ListenError, bind, load_secret  # noqa: E402
from console.web.views import FeedFilters, ago, distribution_bars, fleet_row  # noqa: E402
from contract.messages import ModelRef, ModelReported, Stats, Status  # noqa: E402


def test_config_file_env_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "console.yaml"
    f.write_text(
        "data_dir: /srv/console\nsites: [dc1]\nmqtt:\n  broker: mqtt://broker:1883\n  username: console\n"
        "web:\n  port: 9000\n"
    )
    env = {"BINWATCH_CONSOLE_MQTT_PASSWORD": "s3cret", "BINWATCH_CONSOLE_DB": "postgresql+psycopg://u:p@db/c"}
    cfg = load_config(f, {"web": {"port": 9100}, "sites": ["dc1", "dc2"]}, env=env)
    assert cfg.web.port == 9100 and cfg.web.host == "127.0.0.1" and cfg.sites == ["dc1", "dc2"]
    assert cfg.mqtt.resolve_password() == "s3cret" and cfg.mqtt.client_id == "binwatch-console"
    assert cfg.db_url == "postgresql+psycopg://u:p@db/c"
    assert cfg.images == "/srv/console/images" and cfg.secret_file == Path("/srv/console/session.key")
    default = load_config(None, {"data_dir": tmp_path}, env={})
    assert default.db_url == f"sqlite:///{tmp_path.resolve() / 'console.db'}"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    f = tmp_path / "console.yaml"
    f.write_text("web:\n  prot: 9000\nsites: ['a/b']\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    text = str(e.value)
    assert str(f) in text and "web.prot: unknown key" in text and "sites" in text
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match=r"mqtt\.broker"):
        load_config(None, {"mqtt": {"broker": "http://x"}}, env={})


def test_session_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "d" / "session.key"
    key = load_secret(path)
    assert len(key) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(path) == key
    path.write_text("short\n")
    with pytest.raises(ValueError, match="too short"):
        load_secret(path)


def test_bind_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"port {port} on 127.0.0.1 is already in use"):
            bind("127.0.0.1", port)
    sock = bind("127.0.0.1", 0)
    sock.close()


def test_distribution_bars_mark_expected_and_predicted_overflow_included() -> None:
    bars = distribution_bars({"5+": 0.1, "0": 0.05, "2": 0.6, "1": 0.25}, expected=7, predicted=2)
    assert [b.label for b in bars] == ["0", "1", "2", "5+"]
    assert [b.y for b in bars] == [0, 22, 44, 66]
    assert [b.label for b in bars if b.expected] == ["5+"] and [b.label for b in bars if b.predicted] == ["2"]
    assert bars[2].width == 180.0


def test_ago_and_filters() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert ago(now - timedelta(seconds=5), now) == "5 s ago"
    assert ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago(now - timedelta(hours=30), now) == "1 d ago"
    assert ago(None, now) == "never"
    f = FeedFilters.from_query({"site": "dc1", "state": "bogus", "bin": "B1"})
    assert f.state == "" and f.query() == "site=dc1&bin=B1"
    assert f.store_kwargs() == {"site": "dc1", "device": None, "state": None, "bin_id": "B1", "before": None}


def test_fleet_row_shows_status_stats_and_model_update() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    model = ModelRef(name="bins", version=7, sha256="a" * 64, precision="int8", backend="tensorrt")
    status = Status(state="online", session=3, ts=now, agent_version="0.1.0", model=model, cameras={})
    stats = Stats(ts=now, uptime_s=60.0, fps=14.25, outbox_depth=12, alerts_published=40)
    reported = ModelReported(version=8, state="failed", detail="golden set mismatch", ts=now)
    dev = DeviceRow("dc1", "jet-7", True, 3, now - timedelta(seconds=40), status, stats, reported)
    row = fleet_row(dev, now)
    assert row["online"] == "online" and row["running"] == "bins v7 (int8, tensorrt)"
    assert (
        row["model_update"] == "v8 failed: golden set mismatch"
        and row["fps"] == "14.2"
        and row["outbox"] == "12"
    )
    assert row["last_seen"] == "40 s ago"
    empty = fleet_row(DeviceRow("dc1", "new", None, None, None, None, None, None), now)
    assert empty["online"] == "unknown" and empty["last_seen"] == "never" and empty["fps"] == ""
