"""The MQTT link against a real mosquitto: QoS 1 delivery in order, status and retained state,
stats, incoming messages, configuration checks."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.delivery.config import MqttConfig
from agent.delivery.link import MqttLink
from agent.delivery.outbox import Outbox
from agent.delivery.state import AgentState
from contract.messages import ModelReported, Stats, Status
from contract.topics import Topics
from mqttconn.config import parse_broker_url
from tests.agent.mqtt_helpers import Collector, make_alert, retained, wait_until
from tests.broker import Mosquitto
from tests.hw import requires_mosquitto, requires_tls

TOPICS = Topics(site="s1", device="d1")


class Agent:
    """A link with its own state dir, for tests."""

    def __init__(self, broker: Mosquitto, state_dir: Path, **kw: object) -> None:
        self.cfg = MqttConfig(
            broker=broker.url, reconnect_min_delay=0.1, reconnect_max_delay=0.5, keepalive=5
        )
        self.state = AgentState(state_dir)
        self.outbox = Outbox(self.state.db_path)
        self.link = MqttLink(self.cfg, TOPICS, self.outbox, self.state, **kw)  # type: ignore[arg-type]

    def close(self, clean: bool = True) -> None:
        self.link.stop(clean=clean)
        self.outbox.close()
        self.state.close()


@pytest.fixture()
def agent(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Agent]:
    a = Agent(mosquitto, tmp_path / "state")
    yield a
    a.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_alerts_arrive_qos1_in_order_and_outbox_drains(
    mosquitto: Mosquitto, agent: Agent, protocol: str
) -> None:
    agent.link.cfg.protocol = protocol  # type: ignore[assignment]
    sub = Collector(mosquitto.url)
    agent.link.start()
    assert wait_until(lambda: agent.link.connected)
    sent = [agent.link.enqueue_alert(make_alert()) for _ in range(60)]
    assert [a.seq for a in sent] == list(range(1, 61))
    assert {a.session for a in sent} == {agent.link.session}
    assert wait_until(lambda: len(sub.alerts()) >= 60)
    got = sub.alerts()
    assert [a.alert_id for a in got] == [a.alert_id for a in sent]  # in order, nothing twice
    assert [a.seq for a in got] == list(range(1, 61))
    assert not any(a.is_historical for a in got)  # enqueued while connected: live, not replayed
    assert all(a.published_ts is not None and a.published_ts >= a.frame_ts for a in got)
    assert wait_until(lambda: agent.outbox.depth() == 0)
    assert agent.link.counters.alerts_published == 60
    status = sub.statuses()[-1]
    assert status["state"] == "online" and status["session"] == agent.link.session
    sub.close()


def test_status_online_then_stopped_retained_with_session(mosquitto: Mosquitto, tmp_path: Path) -> None:
    def provider(state: str) -> Status:
        return Status(state=state, session=0, ts=datetime.now(timezone.utc), agent_version="9.9")  # type: ignore[arg-type]

    a = Agent(mosquitto, tmp_path / "state", status_provider=provider)
    a.link.start()
    assert wait_until(lambda: a.link.connected)
    online = json.loads(retained(mosquitto.url, TOPICS.status) or b"{}")
    assert online["state"] == "online" and online["session"] == a.link.session == 1
    assert online["agent_version"] == "9.9"
    a.close(clean=True)
    stopped = Status.parse(retained(mosquitto.url, TOPICS.status) or b"{}")
    assert stopped.state == "stopped" and stopped.session == 1
    # the next start is a new session
    b = Agent(mosquitto, tmp_path / "state")
    b.link.start()
    assert wait_until(lambda: b.link.connected)
    assert b.link.session == 2
    b.close()


def test_unclean_stop_leaves_the_will_offline(mosquitto: Mosquitto, tmp_path: Path) -> None:
    a = Agent(mosquitto, tmp_path / "state")
    a.link.start()
    assert wait_until(lambda: a.link.connected)
    a.link.enqueue_alert(make_alert())
    assert wait_until(lambda: a.outbox.depth() == 0)
    a.close(clean=False)  # no DISCONNECT: the broker publishes the will
    will = Status.parse(retained(mosquitto.url, TOPICS.status) or b"{}")
    assert will.state == "offline" and will.session == 1


def test_retained_state_republished_after_broker_restart(mosquitto: Mosquitto, agent: Agent) -> None:
    agent.link.start()
    assert wait_until(lambda: agent.link.connected)
    reported = ModelReported(version=7, state="active", ts=datetime.now(timezone.utc))
    agent.link.report_model(reported)
    assert wait_until(lambda: retained(mosquitto.url, TOPICS.model_reported, 1.0))
    first_session = agent.link.session
    mosquitto.stop()  # persistence false: the restarted broker has forgotten every retained message
    assert wait_until(lambda: not agent.link.connected)
    mosquitto.start()
    assert wait_until(lambda: agent.link.connected)
    assert agent.link.session > first_session
    got = ModelReported.parse(retained(mosquitto.url, TOPICS.model_reported) or b"{}")
    assert got.version == 7 and got.state == "active"
    status = Status.parse(retained(mosquitto.url, TOPICS.status) or b"{}")
    assert status.state == "online" and status.session == agent.link.session


def test_stats_qos0_sent_when_connected_dropped_when_down(mosquitto: Mosquitto, tmp_path: Path) -> None:
    def stats() -> Stats:
        return Stats(ts=datetime.now(timezone.utc), uptime_s=1.0, fps=2.0)

    a = Agent(mosquitto, tmp_path / "state", stats_provider=stats)
    a.cfg.stats_interval_s = 0.2
    sub = Collector(mosquitto.url)
    one = Stats(ts=datetime.now(timezone.utc), uptime_s=0.0, fps=0.0)
    assert a.link.publish_stats(one) is False  # not started: dropped, counted
    assert a.link.counters.stats_dropped == 1
    a.link.enqueue_alert(make_alert())  # outbox depth shows in stats until it is delivered
    a.link.start()
    assert wait_until(lambda: len(sub.on("/stats")) >= 2)
    parsed = [Stats.parse(p) for _t, p, _r in sub.on("/stats")]
    assert all(s.fps == 2.0 for s in parsed)
    assert wait_until(lambda: sub.alerts())
    assert wait_until(lambda: Stats.parse(sub.on("/stats")[-1][1]).alerts_published == 1)
    assert a.link.publish_stats(one) is True
    a.close()
    sub.close()


def test_clean_stop_publishes_final_stats_before_stopped(mosquitto: Mosquitto, tmp_path: Path) -> None:
    calls: list[int] = []

    def stats() -> Stats:
        calls.append(1)
        return Stats(ts=datetime.now(timezone.utc), uptime_s=1.0, fps=0.0, verdicts={"match": len(calls)})

    a = Agent(mosquitto, tmp_path / "state", stats_provider=stats)
    a.cfg.stats_interval_s = 3600  # no periodic stats in this test: only the one at stop
    sub = Collector(mosquitto.url)
    a.link.start()
    assert wait_until(lambda: a.link.connected)
    a.close(clean=True)
    assert wait_until(lambda: [s for s in sub.statuses() if s["state"] == "stopped"])
    order = [t.rsplit("/", 1)[-1] for t, _p, _r in sub.messages if t.endswith(("/stats", "/status"))]
    assert order == ["status", "stats", "status"]  # online, the totals at stop, stopped
    assert Stats.parse(sub.on("/stats")[0][1]).verdicts == {"match": 1}
    sub.close()


def test_incoming_messages_reach_the_handler_even_after_it_fails(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    got: list[tuple[str, bytes]] = []
    done = threading.Event()

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        got.append((topic, payload))
        done.set()

    a = Agent(mosquitto, tmp_path / "state", on_message=handler, subscriptions=[(TOPICS.bin, 1)])
    a.link.start()
    assert wait_until(lambda: a.link.connected)
    pub = Collector(mosquitto.url, "nothing/here")
    # the subscription follows the online status: publish until the first message gets through
    assert wait_until(lambda: pub.client.publish(TOPICS.bin, b"ok1", qos=1) is not None and done.wait(0.2))
    done.clear()
    pub.client.publish(TOPICS.bin, b"boom", qos=1)
    pub.client.publish(TOPICS.bin, b"ok2", qos=1)
    assert wait_until(lambda: (TOPICS.bin, b"ok2") in got)
    assert (TOPICS.bin, b"boom") not in got
    assert a.link.counters.messages_received >= 2
    pub.close()
    a.close()


def test_config_checks() -> None:
    assert parse_broker_url("mqtts://broker.example").port == 8883
    assert parse_broker_url("mqtt://10.0.0.2:1884").model_dump() == {
        "host": "10.0.0.2",
        "port": 1884,
        "tls": False,
    }
    for bad in ("http://x:1", "mqtt://", "mqtt://u:p@host:1883", "mqtt://h:1883/path"):
        with pytest.raises(ValidationError):
            MqttConfig(broker=bad)
    with pytest.raises(ValidationError, match=r"tls\.cert and tls\.key"):
        MqttConfig(tls={"cert": "/c.pem"})
    with pytest.raises(ValidationError, match="not both"):
        MqttConfig(username="u", password="p", password_file="/p")
    with pytest.raises(ValidationError, match="extra"):
        MqttConfig(brokr="mqtt://x")
    cfg = MqttConfig(username="u", password="s3cret")
    assert "s3cret" not in repr(cfg) and cfg.resolve_password() == "s3cret"


@requires_mosquitto
def test_password_file_and_wrong_credentials(tmp_path: Path) -> None:
    """Username/password from a file against a mosquitto with a password file; a wrong password is
    refused with a logged cause and the link keeps retrying (alerts stay in the outbox)."""
    import shutil
    import subprocess

    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed (apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "broker")
    pw = tmp_path / "broker" / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pw), "agent", "right"], check=True, capture_output=True
    )
    broker.conf.write_text(
        broker.conf.read_text().replace("allow_anonymous true", f"allow_anonymous false\npassword_file {pw}")
    )
    broker.start()
    try:
        secret = tmp_path / "secret"
        secret.write_text("wrong\n")
        cfg = MqttConfig(
            broker=broker.url,
            username="agent",
            password_file=secret,
            reconnect_min_delay=0.1,
            reconnect_max_delay=0.2,
        )
        state = AgentState(tmp_path / "state")
        ob = Outbox(state.db_path)
        link = MqttLink(cfg, TOPICS, ob, state)
        link.start()
        link.enqueue_alert(make_alert())
        assert wait_until(lambda: link.counters.connect_failures >= 2)
        assert not link.connected and ob.depth() == 1
        secret.write_text("right\n")  # read at each connect: rotation needs no restart
        assert wait_until(lambda: ob.depth() == 0)
        assert link.counters.alerts_published == 1
        link.stop()
        ob.close()
        state.close()
    finally:
        broker.stop()


def _tls_material(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime as dt
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(
        cn: str, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, issuer: str, ca: bool
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return b.sign(ca_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[f"{stem}_cert"] = d / f"{stem}.pem"
        files[f"{stem}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{stem}_key"] = d / f"{stem}.key"
        files[f"{stem}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    write("ca", issue("binwatch-test-ca", ca_key, ca_key, "binwatch-test-ca", True), ca_key)
    for stem in ("server", "client"):
        k = ec.generate_private_key(ec.SECP256R1())
        write(stem, issue(f"binwatch-test-{stem}", k, ca_key, "binwatch-test-ca", False), k)
    return files


@requires_mosquitto
@requires_tls
def test_mutual_tls(tmp_path: Path) -> None:
    """mqtts:// with a CA, a client certificate and key against a mosquitto that requires one."""
    tls = _tls_material(tmp_path)
    broker = Mosquitto(tmp_path / "broker")
    broker.conf.write_text(
        broker.conf.read_text()
        + f"cafile {tls['ca_cert']}\ncertfile {tls['server_cert']}\nkeyfile {tls['server_key']}\n"
        "require_certificate true\n"
    )
    broker.start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        ok = MqttConfig(
            broker=url,
            tls={"ca": tls["ca_cert"], "cert": tls["client_cert"], "key": tls["client_key"]},
            reconnect_min_delay=0.1,
            reconnect_max_delay=0.2,
        )
        no_cert = ok.model_copy(update={"tls": ok.tls.model_copy(update={"cert": None, "key": None})})
        for cfg, should_connect in ((no_cert, False), (ok, True)):
            state = AgentState(tmp_path / f"state-{should_connect}")
            ob = Outbox(state.db_path)
            link = MqttLink(cfg, TOPICS, ob, state)
            link.enqueue_alert(make_alert())
            link.start()
            if should_connect:
                assert wait_until(lambda link=link, ob=ob: ob.depth() == 0)  # type: ignore[misc]
                assert link.counters.alerts_published == 1
            else:
                assert wait_until(lambda link=link: link.counters.connect_failures >= 2)  # type: ignore[misc]
                assert ob.depth() == 1 and link.counters.connects == 0
            link.stop()
            ob.close()
            state.close()
    finally:
        broker.stop()


def test_mutual_tls_skips_without_its_tools() -> None:
    """Without mosquitto, or without ssl/cryptography, the TLS test is skipped with a reason."""
    marks = {m.kwargs["reason"]: m.args[0] for m in test_mutual_tls.pytestmark if m.name == "skipif"}
    assert any("mosquitto" in r for r in marks) and any("cryptography" in r for r in marks)


def _open_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux) to count open sockets")
def test_reconnects_do_not_leak_sockets(mosquitto: Mosquitto, agent: Agent) -> None:
    """Every reconnect makes a new paho client; the old one (and its wake-up socket pair) must be
    freed at once, not at some later garbage collection (bench/soak.py found 2 sockets per restart)."""
    agent.link.start()
    assert wait_until(lambda: agent.link.connected)
    counts = []
    for _ in range(6):
        mosquitto.stop()
        assert wait_until(lambda: not agent.link.connected)
        mosquitto.start()
        assert wait_until(lambda: agent.link.connected)
        counts.append(_open_sockets())
    assert counts[-1] <= counts[0] + 1, counts
