"""Delivery under faults, against a real mosquitto: broker outage mid-stream, a broker that hangs
and crashes with alerts in flight, start while the broker is down, SIGKILL of the agent process
(last will, no alert lost, seq continues)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.delivery.config import MqttConfig
from agent.delivery.link import MqttLink
from agent.delivery.outbox import Outbox
from agent.delivery.state import AgentState
from contract.messages import Alert, Status
from contract.topics import Topics
from tests.agent.mqtt_helpers import Collector, PersistentMosquitto, make_alert, retained, wait_until
from tests.broker import Mosquitto
from tests.hw import REPO, requires_mosquitto

pytestmark = requires_mosquitto

TOPICS = Topics(site="s1", device="d1")
OUTAGE_S = 3.0


def _link(url: str, state_dir: Path) -> tuple[MqttLink, Outbox, AgentState]:
    cfg = MqttConfig(broker=url, reconnect_min_delay=0.1, reconnect_max_delay=0.5, keepalive=5)
    state = AgentState(state_dir)
    outbox = Outbox(state.db_path)
    return MqttLink(cfg, TOPICS, outbox, state), outbox, state


@pytest.fixture()
def pbroker(tmp_path: Path) -> Iterator[PersistentMosquitto]:
    """A broker that keeps the test subscriber's session across restarts, so the subscriber cannot
    miss what the agent replays while it is itself reconnecting."""
    b = PersistentMosquitto(tmp_path / "pbroker")
    b.start()
    yield b
    b.stop()


def _first_copies(alerts: list[Alert]) -> dict[str, Alert]:
    first: dict[str, Alert] = {}
    for a in alerts:
        first.setdefault(a.alert_id, a)
    return first


def test_broker_outage_mid_stream_loses_nothing(pbroker: PersistentMosquitto, tmp_path: Path) -> None:
    sub = Collector(pbroker.url, TOPICS.alert_mismatch, persistent=True)
    link, outbox, state = _link(pbroker.url, tmp_path / "state")
    link.start()
    assert wait_until(lambda: link.connected)
    before = [link.enqueue_alert(make_alert()) for _ in range(10)]
    assert wait_until(lambda: outbox.depth() == 0)

    pbroker.stop()
    assert wait_until(lambda: not link.connected)
    during = []
    t_end = time.monotonic() + OUTAGE_S
    while time.monotonic() < t_end:  # the agent keeps deciding while the broker is away
        during.append(link.enqueue_alert(make_alert()))
        time.sleep(0.1)
    assert outbox.depth() == len(during)  # buffered on disk, nothing dropped
    assert outbox.dropped() == 0
    pbroker.start()
    after = [link.enqueue_alert(make_alert()) for _ in range(10)]

    sent = before + during + after
    ids = {a.alert_id for a in sent}
    assert wait_until(lambda: ids <= sub.alert_ids()), f"missing {len(ids - sub.alert_ids())} alert(s)"
    assert wait_until(lambda: outbox.depth() == 0)

    # A broker that hangs and then crashes: the alerts written to its socket are never PUBACKed
    # and never reach anyone. They must stay in the outbox and be replayed after the restart.
    assert pbroker.proc is not None
    pbroker.proc.send_signal(signal.SIGSTOP)
    frozen = [link.enqueue_alert(make_alert()) for _ in range(10)]
    time.sleep(0.3)  # the link has sent them on the (still open) connection
    pbroker.proc.kill()
    pbroker.proc.wait()
    assert wait_until(lambda: not link.connected)
    pbroker.start()  # restores the subscriber's session saved at the clean stop above
    sent += frozen
    ids = {a.alert_id for a in sent}
    assert wait_until(lambda: ids <= sub.alert_ids()), f"missing {len(ids - sub.alert_ids())} alert(s)"
    assert wait_until(lambda: outbox.depth() == 0)

    got = sub.alerts()
    first = _first_copies(got)
    assert all(not first[a.alert_id].is_historical for a in before)
    assert all(first[a.alert_id].is_historical for a in during + frozen)  # replayed from the outbox
    # ids and seqs are those assigned at enqueue time; the stream has no gap and no reuse
    by_seq = {a.seq: a.alert_id for a in got}
    assert sorted(by_seq) == list(range(1, len(sent) + 1))
    assert all(by_seq[a.seq] == a.alert_id for a in sent)
    # the replay kept the order in which alerts were decided
    order = [a.seq for a in first.values()]
    assert order == sorted(order)
    assert link.counters.alerts_replayed >= len(during) + len(frozen)
    link.stop()
    outbox.close()
    state.close()
    sub.close()


def test_start_while_broker_down_buffers_then_delivers(pbroker: PersistentMosquitto, tmp_path: Path) -> None:
    sub = Collector(pbroker.url, TOPICS.alert_mismatch, persistent=True)
    pbroker.stop()
    # first run: never reaches the broker, stops cleanly; its alerts stay in the outbox
    link, outbox, state = _link(pbroker.url, tmp_path / "state")
    link.start()
    first = [link.enqueue_alert(make_alert()) for _ in range(10)]
    assert wait_until(lambda: link.counters.connect_failures >= 2)
    assert not link.connected
    link.stop(clean=True)
    outbox.close()
    state.close()
    # second run on the same state dir, still without a broker
    link, outbox, state = _link(pbroker.url, tmp_path / "state")
    link.start()
    second = [link.enqueue_alert(make_alert()) for _ in range(10)]
    assert [a.seq for a in first + second] == list(range(1, 21))
    assert outbox.depth() == 20
    pbroker.start()
    ids = [a.alert_id for a in first + second]
    assert wait_until(lambda: set(ids) <= sub.alert_ids())
    assert wait_until(lambda: outbox.depth() == 0)
    got = _first_copies(sub.alerts())
    assert list(got) == ids  # in the order they were decided
    assert all(a.is_historical for a in got.values())
    link.stop()
    outbox.close()
    state.close()
    sub.close()


CHILD = r"""
import sys, time
from agent.delivery.config import MqttConfig
from agent.delivery.link import MqttLink
from agent.delivery.outbox import Outbox
from agent.delivery.state import AgentState
from contract.topics import Topics
from tests.agent.mqtt_helpers import make_alert

state_dir, url, mode = sys.argv[1], sys.argv[2], sys.argv[5]
n, interval = int(sys.argv[3]), float(sys.argv[4])
cfg = MqttConfig(broker=url, reconnect_min_delay=0.1, reconnect_max_delay=0.5, keepalive=5)
state = AgentState(state_dir)
outbox = Outbox(state.db_path)
link = MqttLink(cfg, Topics(site="s1", device="d1"), outbox, state)
link.start()
deadline = time.monotonic() + 30
while not link.connected and time.monotonic() < deadline:
    time.sleep(0.01)
print("CONNECTED", link.session, flush=True)
for _ in range(n):
    a = link.enqueue_alert(make_alert())
    print("ALERT", a.alert_id, a.seq, a.session, flush=True)
    time.sleep(interval)
if mode == "drain":
    deadline = time.monotonic() + 30
    while outbox.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    link.stop(clean=True)
    print("STOPPED", outbox.depth(), flush=True)
else:
    time.sleep(3600)
"""


class Child:
    """The agent's delivery stack in its own process, printing what it has committed."""

    def __init__(self, state_dir: Path, url: str, n: int, interval: float, mode: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.log = state_dir.parent / f"child-{mode}.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(state_dir), url, str(n), str(interval), mode],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self.lines: list[list[str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut short by SIGKILL is not something the child finished
                self.lines.append(line.split())

    def alerts(self) -> list[tuple[str, int, int]]:
        return [(w[1], int(w[2]), int(w[3])) for w in list(self.lines) if len(w) == 4 and w[0] == "ALERT"]

    def session(self) -> int | None:
        return next((int(w[1]) for w in list(self.lines) if w and w[0] == "CONNECTED"), None)

    def finish(self) -> None:
        self.proc.wait(60)
        self._reader.join(10)


def test_sigkill_loses_nothing_will_says_offline_and_seq_continues(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    sub = Collector(mosquitto.url)
    first = Child(state_dir, mosquitto.url, n=100_000, interval=0.005, mode="hold")
    assert wait_until(lambda: len(first.alerts()) >= 40), first.log.read_text()
    # Freeze the broker so PUBACKs stop: the in-flight window fills and a backlog builds up in the
    # outbox; then kill the agent mid-stream and let the broker go on.
    assert mosquitto.proc is not None
    mosquitto.proc.send_signal(signal.SIGSTOP)
    try:
        n0 = len(first.alerts())
        assert wait_until(lambda: len(first.alerts()) >= n0 + 30)
        first.proc.send_signal(signal.SIGKILL)
        first.finish()
    finally:
        mosquitto.proc.send_signal(signal.SIGCONT)
    s1 = first.session()
    assert s1 is not None
    # the broker publishes the last will: offline, same session as the dead connection
    assert wait_until(lambda: any(s["state"] == "offline" for s in sub.statuses()))
    will = Status.parse(retained(mosquitto.url, TOPICS.status) or b"{}")
    assert will.state == "offline" and will.session == s1

    second = Child(state_dir, mosquitto.url, n=20, interval=0.0, mode="drain")
    second.finish()
    assert second.proc.returncode == 0, second.log.read_text()
    assert any(w == ["STOPPED", "0"] for w in second.lines)
    s2 = second.session()
    assert s2 is not None and s2 > s1

    committed = first.alerts() + second.alerts()
    ids = {aid for aid, _seq, _sess in committed}
    assert wait_until(lambda: ids <= sub.alert_ids()), f"lost {len(ids - sub.alert_ids())} alert(s)"
    got = sub.alerts()
    # no seq reused, none skipped: every alert committed before the kill (printed or not) arrived
    by_seq: dict[int, set[str]] = {}
    for a in got:
        by_seq.setdefault(a.seq, set()).add(a.alert_id)
    assert all(len(v) == 1 for v in by_seq.values()), "a seq was given to two alerts"
    assert sorted(by_seq) == list(range(1, max(by_seq) + 1))
    # seq continues after the restart: the second run's alerts come after everything the first stored
    first_max = max(
        seq for a_id, seq in ((a.alert_id, a.seq) for a in got) if a_id not in {c[0] for c in second.alerts()}
    )
    assert min(seq for _aid, seq, _s in second.alerts()) == first_max + 1
    # replayed alerts of the first run are marked historical; a clean stop leaves status stopped
    assert any(a.is_historical and a.session == s1 for a in got)
    final = Status.parse(retained(mosquitto.url, TOPICS.status) or b"{}")
    assert final.state == "stopped" and final.session == s2
    sub.close()
