"""``binwatch alerts watch``: dedupe by alert_id, seq gaps reported, JSON lines and table output."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from console.alerts_watch import AlertTracker, alert_filter
from console.cli import app as alerts_app
from contract.messages import Alert
from contract.topics import Topics
from tests.agent.mqtt_helpers import make_alert, wait_until
from tests.broker import Mosquitto, free_port
from tests.hw import REPO

TOPICS = Topics(site="s1", device="d1")


def test_tracker_dedupes_and_reports_gaps_per_device() -> None:
    t = AlertTracker()
    a1 = make_alert(seq=5)
    first = t.add(a1)
    assert first.new and not first.notices  # the first alert of a device sets the baseline
    assert t.add(a1).new is False and t.duplicates == 1
    assert t.add(make_alert(seq=6)).notices == ()
    gap = t.add(make_alert(seq=9)).notices
    assert [n.kind for n in gap] == ["gap"] and gap[0].missing == (7, 8)
    assert "seq 7..8" in gap[0].text and "s1/d1" in gap[0].text
    assert t.missing("s1/d1") == {7, 8} and t.gaps == 2
    late = t.add(make_alert(seq=7)).notices
    assert [n.kind for n in late] == ["late"] and t.missing("s1/d1") == {8}
    # another device has its own sequence
    assert t.add(make_alert(device="d2", seq=1)).notices == ()
    assert t.add(make_alert(device="d2", seq=2)).notices == ()
    back = t.add(make_alert(seq=1)).notices  # new alert_id, old seq: state reset or seq reused
    assert [n.kind for n in back] == ["backwards"]
    assert t.new == 7


def test_alert_filter_validates_ids() -> None:
    assert alert_filter(site="dc1") == "binwatch/v1/dc1/+/alert/mismatch"
    with pytest.raises(ValueError):
        alert_filter(site="a/b")


def _publish(url: str, items: list[tuple[str, bytes]]) -> None:
    port = int(url.rsplit(":", 1)[1])
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    c.connect("127.0.0.1", port)
    c.loop_start()
    for topic, payload in items:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


class Watch:
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "watch", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self._t = threading.Thread(target=self._read_err, daemon=True)
        self._t.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def listening(self) -> bool:
        return any("listening on" in line for line in self.err)

    def finish(self) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()  # stderr belongs to the reader thread
        self.proc.wait(60)
        self._t.join(10)
        return self.proc.returncode, out, "".join(self.err)


def test_watch_json_dedupes_and_reports_a_gap(mosquitto: Mosquitto) -> None:
    w = Watch("--broker", mosquitto.url, "--site", "s1", "--json", "--count", "3", "--timeout", "60")
    assert wait_until(lambda: w.listening() or w.proc.poll() is not None)
    a1, a2, a4 = make_alert(seq=1), make_alert(seq=2), make_alert(seq=4)
    other_site = Topics(site="s2", device="d1").alert_mismatch
    _publish(
        mosquitto.url,
        [
            (TOPICS.alert_mismatch, a1.to_json_bytes()),
            (TOPICS.alert_mismatch, a2.to_json_bytes()),
            (
                TOPICS.alert_mismatch,
                a2.model_copy(update={"is_historical": True}).to_json_bytes(),
            ),  # replayed
            (TOPICS.alert_mismatch, b'{"schema": "binwatch.alert", "seq": "three"}'),
            (other_site, make_alert(site="s2", seq=3).to_json_bytes()),  # not subscribed
            (TOPICS.alert_mismatch, a4.to_json_bytes()),
        ],
    )
    code, out, err = w.finish()
    assert code == 0, err
    got = [Alert.parse(line) for line in out.splitlines()]
    assert [a.alert_id for a in got] == [a1.alert_id, a2.alert_id, a4.alert_id]
    assert "gap in seq from s1/d1: 1 alert(s) missing (seq 3)" in err
    assert "ignored a message" in err and "seq" in err


def test_watch_table(mosquitto: Mosquitto) -> None:
    w = Watch("--broker", mosquitto.url, "--device", "d1", "--count", "1", "--timeout", "60")
    # table mode prints no "listening" line: publish until the subscription catches one
    alert = make_alert(bin_id="bin-table-7", seq=1)
    assert wait_until(
        lambda: (
            _publish(mosquitto.url, [(TOPICS.alert_mismatch, alert.to_json_bytes())])
            or w.proc.poll() is not None
        )
    )
    code, out, err = w.finish()
    assert code == 0, err
    assert "bin-table-7" in out and "p(expected)" in out
    assert "1 alert(s), 0 duplicate(s)" in out


def test_watch_errors_name_the_cause(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(alerts_app, ["watch", "--broker", "http://x:1"])
    assert r.exit_code == 2 and "mqtt://" in r.output
    r = runner.invoke(alerts_app, ["watch", "--site", "a/b"])
    assert r.exit_code == 2 and "site" in r.output
    r = runner.invoke(alerts_app, ["watch", "--broker", f"mqtt://127.0.0.1:{free_port()}", "--timeout", "1"])
    assert r.exit_code == 1 and "cannot connect" in r.output and "--broker" in r.output
    assert "Traceback" not in r.output


def test_watch_timeout_without_enough_alerts(mosquitto: Mosquitto) -> None:
    r = CliRunner().invoke(
        alerts_app, ["watch", "--broker", mosquitto.url, "--json", "--count", "2", "--timeout", "0.5"]
    )
    assert r.exit_code == 1 and "timed out" in r.output and "0 of 2" in r.output


def test_duplicate_with_new_seq_after_restart_is_no_gap() -> None:
    t = AlertTracker()
    t.add(make_alert(seq=1))
    resent = make_alert(seq=2)
    assert t.add(resent).notices == ()
    # the agent restarted and re-sent the same alert under a new seq: the seq is used up
    again = t.add(resent.model_copy(update={"seq": 3}))
    assert again.new is False and again.notices == () and t.duplicates == 1
    assert t.add(make_alert(seq=4)).notices == ()  # no false gap at seq 3
    assert t.missing("s1/d1") == set() and t.gaps == 0
    # the original delivery of the duplicate (old seq) is quiet too
    assert t.add(resent).notices == ()
    # a real gap is still reported, also when the alert that shows it is a duplicate
    gap = t.add(resent.model_copy(update={"seq": 7})).notices
    assert [n.kind for n in gap] == ["gap"] and gap[0].missing == (5, 6) and t.gaps == 2
    # a duplicate whose re-sent seq falls in the gap covers it without a 'late' warning
    assert t.add(resent.model_copy(update={"seq": 5})).notices == ()
    assert t.missing("s1/d1") == {6}
