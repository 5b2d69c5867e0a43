"""The shipped broker security (deploy/mosquitto/, docs/broker.md) against a real mosquitto.

The broker runs the shipped ``mosquitto.conf`` with only its paths, port and user substituted, and
the PKI, password file and ACL made by the shipped ``make-dev-pki.sh``. Clients are paho 2 clients
from ``mqttconn.client.make_client`` speaking MQTT 5, so a refused publish shows up as "Not
authorized" in the PUBACK (MQTT 3.1.1 would acknowledge it and drop it silently). What a client may
read is asserted on what a subscriber actually receives: a message it must not see is checked
after a sentinel it may see, published later, has arrived (mosquitto routes messages in order).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from contract.topics import Topics, fleet_desired, group_desired
from mqttconn.client import connect_kwargs, make_client
from mqttconn.config import BrokerConfig, TlsConfig
from tests.broker import Mosquitto, free_port, mosquitto_binary
from tests.hw import REPO, requires_mosquitto

HERE = REPO / "deploy" / "mosquitto"
SHIPPED_CONF = HERE / "mosquitto.conf"
MAKE_PKI = HERE / "make-dev-pki.sh"
MAKE_ACL = HERE / "make-acl.sh"

requires_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command line tool (apt-get install openssl)"
)
requires_mosquitto_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None,
    reason="needs mosquitto_passwd (apt-get install mosquitto; .ci/run installs it)",
)
pytestmark = [pytest.mark.mqtt, requires_mosquitto, requires_openssl, requires_mosquitto_passwd]

NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86
WAIT_S = 10.0

D1 = Topics("dc1", "d1")  # groups: aisle-a; has a client certificate
D2 = Topics("dc1", "d2")  # same site, no group
D3 = Topics("dc2", "d3")  # another site
DEPLOY = "binwatch-deploy"
OPERATOR = "binwatch-operator"


def run_script(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({done.returncode}): {done.stderr}")
    return done


def make_pki(out: Path) -> Path:
    devices = ("--device", "dc1/d1:aisle-a", "--device", "dc1/d2", "--device", "dc2/d3")
    run_script(MAKE_PKI, "--host", "broker.binwatch.test", *devices, "--client-cert", "dc1/d1", out)
    return out


# --- the broker: the shipped config, rendered ------------------------------------------------------


def render_config(
    shipped: str, *, port: int, pki: Path, state: Path, require_certificate: bool | None = None
) -> str:
    """The shipped config with its paths, port and user substituted. Every substituted setting must
    be in the shipped file exactly once, so a renamed or removed setting fails here."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    replace: dict[str, str | None] = {
        "listener": f"listener {port} 127.0.0.1",
        "cafile": f"cafile {pki / 'ca.pem'}",
        "certfile": f"certfile {pki / 'server.pem'}",
        "keyfile": f"keyfile {pki / 'server.key'}",
        "password_file": f"password_file {pki / 'passwd'}",
        "acl_file": f"acl_file {pki / 'acl'}",
        "persistence_location": f"persistence_location {state}/",
        "pid_file": None,
        # as root mosquitto drops to the `mosquitto` user, which cannot read root's temp files
        "user": "user root" if root else None,
    }
    if require_certificate is not None:
        replace["require_certificate"] = f"require_certificate {str(require_certificate).lower()}"
    out, seen = [], dict.fromkeys(replace, 0)
    for line in shipped.splitlines():
        key = line.split(" ", 1)[0]
        if key in replace:
            seen[key] += 1
            if replace[key] is not None:
                out.append(replace[key])
        else:
            out.append(line)
    assert all(n == 1 for n in seen.values()), f"settings not exactly once in {SHIPPED_CONF}: {seen}"
    return "\n".join(out) + "\n"


class Broker(Mosquitto):
    """tests.broker.Mosquitto started from the shipped production config instead of the test one."""

    def __init__(self, workdir: Path, pki: Path, *, require_certificate: bool | None = None) -> None:
        super().__init__(workdir)
        self.pki = pki
        (self.workdir / "state").mkdir(exist_ok=True)
        self.conf.write_text(
            render_config(
                SHIPPED_CONF.read_text(),
                port=self.port,
                pki=pki,
                state=self.workdir / "state",
                require_certificate=require_certificate,
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki") / "dev-pki")


@pytest.fixture(scope="module")
def broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"), pki)
    b.start()
    try:
        yield b
    finally:
        b.stop()


# --- MQTT 5 clients ------------------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes


class Client:
    """A connected MQTT 5 client that records PUBACK/SUBACK reason codes and received messages."""

    def __init__(self, client: mqtt.Client, cfg: BrokerConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.dropped = False
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.received: list[Received] = []
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.cond:
            self.connack = reason_code
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self.cond:
            self.dropped = True
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.cond:
            self.acks[mid] = reason_code
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self.cond:
            self.subacks[mid] = list(reason_codes)
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.received.append(Received(msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def wait_until(self, what: str, ready) -> None:
        with self.cond:
            if not self.cond.wait_for(ready, timeout=WAIT_S):
                raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")

    def connect(self) -> ReasonCode:
        """The CONNACK's reason code; ConnectionError when the broker closes without one."""
        self.client.connect(**connect_kwargs(self.cfg))
        self.client.loop_start()
        self.wait_until("CONNACK", lambda: self.connack is not None or self.dropped)
        if self.connack is None:
            raise ConnectionError("the broker closed the connection without a CONNACK")
        return self.connack

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self.wait_until(f"PUBACK of {topic}", lambda: info.mid in self.acks)
        return self.acks[info.mid]

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        self.wait_until(f"SUBACK of {filters}", lambda: mid in self.subacks)
        return self.subacks[mid]

    def wait_for(self, topic: str, payload: bytes) -> None:
        self.wait_until(f"{payload!r} on {topic}", lambda: Received(topic, payload) in self.received)

    def got(self, payload: bytes) -> list[str]:
        """Topics on which ``payload`` arrived."""
        with self.cond:
            return [m.topic for m in self.received if m.payload == payload]

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def credentials(pki: Path, user: str) -> Path:
    return pki / "credentials" / f"{user}.password"


def client_config(
    broker: Broker,
    user: str | None,
    *,
    password_file: Path | None = None,
    ca: bool = True,
    cert: str | None = None,
    host: str = "127.0.0.1",
) -> BrokerConfig:
    tls = TlsConfig(
        ca=broker.pki / "ca.pem" if ca else None,  # None: the system trust store
        cert=broker.pki / "clients" / f"{cert}.pem" if cert else None,
        key=broker.pki / "clients" / f"{cert}.key" if cert else None,
    )
    return BrokerConfig(
        broker=f"mqtts://{host}:{broker.port}",
        protocol="5",
        tls=tls,
        username=user,
        password_file=(password_file or credentials(broker.pki, user)) if user else None,
        connect_timeout_s=WAIT_S,
    )


@pytest.fixture()
def connect(broker: Broker) -> Iterator:
    """``connect(user, **client_config kwargs)`` -> a connected Client (CONNACK must be success)."""
    opened: list[Client] = []

    def _connect(user: str | None, *, client_id: str | None = None, **kwargs) -> Client:
        cfg = client_config(broker, user, **kwargs)
        c = Client(make_client(cfg, client_id or f"t-{uuid.uuid4().hex[:12]}"), cfg)
        opened.append(c)
        rc = c.connect()
        assert not rc.is_failure, f"{user} refused: {rc}"
        return c

    yield _connect
    for c in opened:
        c.close()


def try_connect(broker: Broker, cfg: BrokerConfig) -> ReasonCode:
    c = Client(make_client(cfg, f"t-{uuid.uuid4().hex[:12]}"), cfg)
    try:
        return c.connect()
    finally:
        c.close()


def token() -> bytes:
    return uuid.uuid4().hex.encode()


# --- the scripts -----------------------------------------------------------------------------------


def test_scripts_help_and_development_warning() -> None:
    for script in (MAKE_PKI, MAKE_ACL):
        done = run_script(script, "--help")
        assert done.stdout.startswith("Usage:"), done.stdout
    assert "DEVELOPMENT" in run_script(MAKE_PKI, "--help").stdout


def test_pki_refuses_to_overwrite_a_ca_without_force(tmp_path: Path) -> None:
    out = make_pki(tmp_path / "pki")
    assert "FOR DEVELOPMENT AND TESTS ONLY" in (out / "DEVELOPMENT-ONLY.txt").read_text()
    ca = (out / "ca.pem").read_bytes()
    again = run_script(MAKE_PKI, "--device", "dc1/d1", out, check=False)
    assert again.returncode != 0
    assert "already holds a CA" in again.stderr and "--force" in again.stderr
    assert (out / "ca.pem").read_bytes() == ca
    run_script(MAKE_PKI, "--device", "dc1/d1", "--force", out)
    assert (out / "ca.pem").read_bytes() != ca
    assert not (out / "credentials" / "dc1" / "d2.password").exists()  # the old run's users are gone


@pytest.mark.parametrize(
    "spec",
    ["dc1", "dc1/d1/x", "_fleet/d1", "dc1/manifest", "dc1/review", "dc1/d+", "dc1/d#", "dc1/a b", "dc1/"],
)
def test_scripts_refuse_ids_that_would_break_the_acl(spec: str, tmp_path: Path) -> None:
    done = run_script(MAKE_ACL, "--device", spec, check=False)
    assert done.returncode == 2 and "error" in done.stderr and not done.stdout
    done = run_script(MAKE_PKI, "--device", spec, tmp_path / "pki", check=False)
    assert done.returncode == 2
    assert not (tmp_path / "pki").exists()  # nothing written


def test_shipped_acl_example_is_the_generator_output() -> None:
    made = run_script(MAKE_ACL, "--devices", HERE / "devices.example").stdout
    assert (HERE / "binwatch.acl.example").read_text() == made
    rules = [ln for ln in made.splitlines() if ln and not ln.startswith("#")]
    assert rules[0].startswith("user "), "a topic line before the first user block applies to anonymous"
    assert not any(ln.startswith("pattern") for ln in rules), "no %u/%c patterns (see docs/broker.md)"


def test_server_certificate_names_and_chain(pki: Path) -> None:
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", pki / "ca.pem", pki / "server.pem", pki / "clients/dc1/d1.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", pki / "server.pem", "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    san = re.search(r"Subject Alternative Name:.*\n\s*(.+)", text)
    assert san is not None
    assert set(san.group(1).split(", ")) == {
        "DNS:broker.binwatch.test",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    }
    assert "DEVELOPMENT CA" in text
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert oct((pki / "credentials" / "dc1" / "d1.password").stat().st_mode & 0o777) == "0o600"


# --- authentication --------------------------------------------------------------------------------


def test_anonymous_client_is_refused(broker: Broker) -> None:
    rc = try_connect(broker, client_config(broker, None))
    assert rc.is_failure and rc.value in (NOT_AUTHORIZED, BAD_CREDENTIALS), rc


def test_wrong_password_and_unknown_user_are_refused(broker: Broker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    for user in ("dc1/d1", "nobody"):
        rc = try_connect(broker, client_config(broker, user, password_file=wrong))
        assert rc.is_failure and rc.value in (NOT_AUTHORIZED, BAD_CREDENTIALS), (user, rc)
    # d1's own password under d2's name
    rc = try_connect(broker, client_config(broker, "dc1/d2", password_file=credentials(broker.pki, "dc1/d1")))
    assert rc.is_failure, rc


# --- devices write their own subtree only --------------------------------------------------------


def test_device_cannot_publish_under_another_device(connect) -> None:
    d1 = connect("dc1/d1")
    for topic in (D2.status, D2.alert_mismatch, D2.model_reported, D2.cmd_result("reload"), D3.status):
        assert d1.publish(topic, token()).value == NOT_AUTHORIZED, topic


def test_client_id_does_not_lend_another_device_rights(connect) -> None:
    """The ACL is bound to the username: d1 connecting with d2's client id is still d1."""
    d1 = connect("dc1/d1", client_id="d2")
    assert d1.publish(D2.status, token()).value == NOT_AUTHORIZED
    d1b = connect("dc1/d1", client_id="dc1/d2")
    assert d1b.publish(D2.alert_mismatch, token()).value == NOT_AUTHORIZED


def test_device_cannot_publish_what_is_addressed_to_it(connect) -> None:
    d1 = connect("dc1/d1")
    for topic in (
        D1.model_desired,
        D1.bin,
        D1.cmd("reload"),
        fleet_desired(),
        group_desired(group="aisle-a"),
        D1.manifest("00121"),
        D1.alert_review,  # the operators' reviews of its alerts
        f"{D1.root}/anything-else",
    ):
        assert d1.publish(topic, token()).value == NOT_AUTHORIZED, topic


def test_device_publishes_its_own_topics_and_the_operator_receives_them(connect) -> None:
    operator = connect(OPERATOR)
    assert not any(rc.is_failure for rc in operator.subscribe("binwatch/v1/#"))
    d1 = connect("dc1/d1")
    own = [
        D1.status,
        D1.alert_mismatch,
        D1.alert_snapshot("4133728a-c4e6-41d5-9edd-3735da1a2174"),
        D1.bin_outcome,
        D1.result,
        D1.stats,
        D1.model_reported,
        D1.cmd_result("reload"),
    ]
    sent = {}
    for topic in own:
        sent[topic] = token()
        rc = d1.publish(topic, sent[topic], retain=topic in (D1.status, D1.model_reported))
        assert not rc.is_failure, (topic, rc)
    for topic, payload in sent.items():
        operator.wait_for(topic, payload)


# --- devices read what is theirs only --------------------------------------------------------------


def test_deploy_sets_desired_state_and_the_device_receives_it(connect) -> None:
    d1 = connect("dc1/d1")
    assert not any(rc.is_failure for rc in d1.subscribe(*D1.subscriptions(groups=("aisle-a",))))
    d2 = connect("dc1/d2")
    d2.subscribe(group_desired(group="aisle-a"), D2.model_desired)  # not in aisle-a
    deploy = connect(DEPLOY)
    desired = {D1.model_desired: token(), fleet_desired(): token(), group_desired(group="aisle-a"): token()}
    for topic, payload in desired.items():
        assert not deploy.publish(topic, payload, retain=True).is_failure, topic
    for topic, payload in desired.items():
        d1.wait_for(topic, payload)
    sentinel = token()
    assert not deploy.publish(D2.model_desired, sentinel, retain=True).is_failure
    d2.wait_for(D2.model_desired, sentinel)
    assert d2.got(desired[group_desired(group="aisle-a")]) == []


def test_deploy_reads_reported_state_and_status_but_writes_nothing_else(connect) -> None:
    deploy = connect(DEPLOY)
    deploy.subscribe("binwatch/v1/+/+/status", "binwatch/v1/+/+/model/reported", "binwatch/v1/#")
    d1 = connect("dc1/d1")
    status, reported, alert = token(), token(), token()
    d1.publish(D1.alert_mismatch, alert)
    d1.publish(D1.status, status, retain=True)
    d1.publish(D1.model_reported, reported, retain=True)
    deploy.wait_for(D1.status, status)
    deploy.wait_for(D1.model_reported, reported)
    assert deploy.got(alert) == []  # published before status, so it would have arrived by now
    for topic in (D1.alert_mismatch, D1.status, D1.bin, D1.cmd("reload"), D1.manifest("00121")):
        assert deploy.publish(topic, token()).value == NOT_AUTHORIZED, topic


def test_device_reads_its_bins_commands_and_site_manifests_only(connect) -> None:
    d1 = connect("dc1/d1")
    d1.subscribe("binwatch/v1/#")
    operator = connect(OPERATOR)
    mine = {D1.bin: token(), D1.cmd("reload"): token(), D1.manifest("00121"): token()}
    others = {
        D2.bin: token(),
        D2.cmd("reload"): token(),
        D3.manifest("00121"): token(),
        D1.alert_review: token(),
    }
    for topic, payload in {**others, **mine}.items():
        assert not operator.publish(topic, payload).is_failure, topic
    for topic, payload in mine.items():
        d1.wait_for(topic, payload)
    for topic, payload in others.items():
        assert d1.got(payload) == [], topic


def test_device_cannot_read_another_devices_alerts(connect) -> None:
    d2 = connect("dc1/d2")
    d2.subscribe(D1.alert_mismatch, "binwatch/v1/+/+/alert/mismatch", "binwatch/v1/#", "#")
    operator = connect(OPERATOR)
    operator.subscribe(D1.alert_mismatch)
    d1 = connect("dc1/d1")
    alert = token()
    assert not d1.publish(D1.alert_mismatch, alert).is_failure
    operator.wait_for(D1.alert_mismatch, alert)  # it was published and routed
    sentinel = token()
    assert not operator.publish(D2.bin, sentinel).is_failure
    d2.wait_for(D2.bin, sentinel)
    assert d2.got(alert) == []


# --- operator ------------------------------------------------------------------------------------


def test_operator_publishes_requests_but_not_device_state_or_desired(connect) -> None:
    operator = connect(OPERATOR)
    for topic in (D1.bin, D1.cmd("reload"), D1.manifest("00121"), D1.alert_review):
        assert not operator.publish(topic, token()).is_failure, topic
    for topic in (
        D1.status,
        D1.alert_mismatch,
        D1.bin_outcome,
        D1.model_desired,
        fleet_desired(),
        D1.cmd_result("reload"),
    ):
        assert operator.publish(topic, token()).value == NOT_AUTHORIZED, topic


# --- TLS -------------------------------------------------------------------------------------------


def test_tls_needs_the_generated_ca(broker: Broker, connect) -> None:
    # the generated CA, by IP address and by host name (the certificate's SANs)
    connect("dc1/d1")
    connect("dc1/d1", host="localhost")
    # without the CA (the system trust store) the broker's certificate is refused
    with pytest.raises(ssl.SSLCertVerificationError):
        try_connect(broker, client_config(broker, "dc1/d1", ca=False))
    # plain MQTT to the TLS port gets no CONNACK
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    plain.username_pw_set("dc1/d1", credentials(broker.pki, "dc1/d1").read_text().strip())
    acked = threading.Event()
    plain.on_connect = lambda *a: acked.set()
    try:
        plain.connect("127.0.0.1", broker.port)
        plain.loop_start()
        assert not acked.wait(1.0)
    except OSError:
        pass  # reset by the broker
    finally:
        plain.loop_stop()


def test_mutual_tls_refuses_a_client_without_certificate(pki: Path, tmp_path: Path) -> None:
    b = Broker(tmp_path / "mtls", pki, require_certificate=True)
    b.start()
    try:
        rc = try_connect(b, client_config(b, "dc1/d1", cert="dc1/d1"))
        assert not rc.is_failure, rc
        # TLS 1.2 fails the handshake; under TLS 1.3 the broker closes the connection right after it
        with pytest.raises((ssl.SSLError, ConnectionError)):
            try_connect(b, client_config(b, "dc1/d2"))
    finally:
        b.stop()


# --- operations: adding a device is a new password line, a new ACL and a reload -------------------


def test_reload_adds_and_removes_devices(pki: Path, tmp_path: Path) -> None:
    """docs/broker.md, "Day-to-day": a new password line and a regenerated ACL take effect on
    SIGHUP; a connected device whose user is gone is disconnected; one that stays keeps its
    connection under the new rules."""
    mine = tmp_path / "pki"
    shutil.copytree(pki, mine)
    b = Broker(tmp_path / "broker", mine)
    b.start()
    connected: dict[str, Client] = {}
    try:
        for user in ("dc1/d2", "dc2/d3"):
            cfg = client_config(b, user)
            connected[user] = Client(make_client(cfg, user.replace("/", "-")), cfg)
            assert not connected[user].connect().is_failure
        password = tmp_path / "d9.password"
        password.write_text("s3cret-d9\n")
        cfg = client_config(b, "dc1/d9", password_file=password)
        subprocess.run(["mosquitto_passwd", "-b", mine / "passwd", "dc1/d9", "s3cret-d9"], check=True)
        subprocess.run(["mosquitto_passwd", "-D", mine / "passwd", "dc1/d2"], check=True)
        # d2 is removed; d3 keeps its password but loses its ACL block; d9 is new
        run_script(MAKE_ACL, "--device", "dc1/d1:aisle-a", "--device", "dc1/d9", "-o", mine / "acl")
        assert try_connect(b, cfg).is_failure  # not before the reload
        assert not connected["dc2/d3"].publish(D3.status, b"before").is_failure
        b.reload()
        deadline = time.monotonic() + WAIT_S
        while try_connect(b, cfg).is_failure:
            assert time.monotonic() < deadline, "dc1/d9 still refused after SIGHUP"
            time.sleep(0.1)
        connected["dc1/d2"].wait_until(
            "the removed device to be disconnected", lambda: connected["dc1/d2"].dropped
        )
        assert connected["dc2/d3"].publish(D3.status, b"after").value == NOT_AUTHORIZED
        assert not connected["dc2/d3"].dropped
        d9 = Client(make_client(cfg, "d9"), cfg)
        connected["dc1/d9"] = d9
        d9.connect()
        assert not d9.publish(Topics("dc1", "d9").status, b"online").is_failure
        assert d9.publish(D1.status, b"x").value == NOT_AUTHORIZED
    finally:
        for c in connected.values():
            c.close()
        b.stop()


def test_retained_state_survives_a_broker_restart(pki: Path, tmp_path: Path) -> None:
    """``persistence true``: a desired model set before a restart still reaches the device after it."""
    b = Broker(tmp_path / "broker", pki)
    b.start()
    try:
        cfg = client_config(b, DEPLOY)
        deploy = Client(make_client(cfg, "deploy"), cfg)
        try:
            assert not deploy.connect().is_failure
            desired = token()
            assert not deploy.publish(D1.model_desired, desired, retain=True).is_failure
        finally:
            deploy.close()
        b.stop()  # SIGTERM: mosquitto writes its database
        b.start()
        cfg = client_config(b, "dc1/d1")
        d1 = Client(make_client(cfg, "d1"), cfg)
        try:
            assert not d1.connect().is_failure
            d1.subscribe(D1.model_desired)
            d1.wait_for(D1.model_desired, desired)
        finally:
            d1.close()
    finally:
        b.stop()


# --- why the ACL spells each device out instead of using %u / %c patterns ------------------------


def test_why_the_acl_uses_no_patterns(tmp_path: Path) -> None:
    """What mosquitto does with ``pattern`` lines (docs/broker.md, "Why each device is spelled out"):

    - ``%c`` is the client id, which the client chooses: d2 connecting as client id ``dc1/d1``
      gets d1's pattern rights;
    - ``%u`` is inserted as is, so a username with ``/`` spans levels: ``dc1/d2/cmd`` matches
      ``<prefix>/%u/status`` as ``dc1/d2/cmd/status``, the command "status" to device d2;
    - a username with ``+`` gets no pattern rights at all (mosquitto refuses the substitution, so
      ``dc1/+`` does not become a wildcard over every device of dc1).
    """
    port = free_port()
    users = {"dc1/d1": "p1", "dc1/d2": "p2", "dc1/d2/cmd": "p3", "dc1/+": "p4"}
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    subprocess.run(["mosquitto_passwd", "-U", passwd], check=True)
    (tmp_path / "acl").write_text("pattern write by-client/%c/status\npattern write bw/%u/status\n")
    conf = [f"listener {port} 127.0.0.1", "allow_anonymous false", "persistence false"]
    conf += [f"password_file {passwd}", f"acl_file {tmp_path / 'acl'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        conf.append("user root")
    (tmp_path / "conf").write_text("\n".join(conf) + "\n")
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(tmp_path / "conf")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "probe broker did not start"
                time.sleep(0.05)

        def publish(user: str, client_id: str, topic: str) -> int:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
            c.username_pw_set(user, users[user])
            cfg = BrokerConfig(broker=f"mqtt://127.0.0.1:{port}", protocol="5")
            wrapped = Client(c, cfg)
            try:
                assert not wrapped.connect().is_failure
                return wrapped.publish(topic, b"x").value
            finally:
                wrapped.close()

        allowed = (0x00, 0x10)  # success, no matching subscribers
        assert publish("dc1/d1", "d1", "bw/dc1/d1/status") in allowed
        assert publish("dc1/d2", "dc1/d1", "by-client/dc1/d1/status") in allowed  # %c: spoofed
        assert publish("dc1/d2/cmd", "x", "bw/dc1/d2/cmd/status") in allowed  # %u spans levels
        assert publish("dc1/+", "y", "bw/dc1/d1/status") == NOT_AUTHORIZED  # not a wildcard
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        log.close()
