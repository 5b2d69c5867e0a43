"""The agent under faults, against a real mosquitto (docs/architecture.md, "Testing"): bad images and
payloads, a camera that disappears, a 20 s broker outage, starting with the broker down, SIGKILL and
restart on the same state dir, SIGTERM, and no torch in the process."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.delivery.outbox import Outbox
from agent.delivery.records import read_verdicts
from contract.messages import CommandResult, Stats, Status
from tests.agent.conftest import SYNTH_COUNT
from tests.agent.mqtt_helpers import ROOT, publish, retained, wait_until
from tests.hw import REPO, requires_mosquitto

pytestmark = requires_mosquitto


def _mismatch_ids(verdicts: list[dict]) -> set[str]:
    return {v["alert_id"] for v in verdicts if v["verdict"] == "mismatch"}


def test_bad_images_payloads_and_a_vanishing_camera_are_counted_and_survived(
    mosquitto,
    collector,
    e2e_config,
    replay_copy: Path,
    tmp_path: Path,
    verdict_log,
    make_runtime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    (replay_copy / "bin-images" / "00003.jpg").write_bytes(b"")
    (replay_copy / "bin-images" / "00007.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage, not a JPEG")
    vanishing = tmp_path / "vanishing"
    shutil.copytree(replay_copy, vanishing)
    cameras = [
        {"name": "usb", "source": "/dev/video99", "backoff_min_s": 0.1, "backoff_max_s": 0.3},
        {
            "name": "gone",
            "source": str(vanishing),
            "kind": "replay",
            "replay_rate": 20,
            "loop": True,
            "backoff_min_s": 0.1,
            "backoff_max_s": 0.3,
        },
    ]
    cfg = e2e_config(mosquitto.url, mismatched=replay_copy, cameras=cameras)
    cfg.cameras[0].replay_rate = 40
    col = collector
    rt = make_runtime(cfg)
    assert wait_until(lambda: rt.link.connected and rt.capture.states["gone"].frames >= 5)

    # the camera's folder disappears: lost, reopened with backoff, back when it returns
    moved = tmp_path / "moved"
    vanishing.rename(moved)
    assert wait_until(lambda: rt.capture.states["gone"].state == "reconnecting")
    assert wait_until(
        lambda: any(
            (s := Status.parse(p)).cameras.get("gone") and s.cameras["gone"].state == "reconnecting"
            for _t, p, _r in col.on("/status")
        )
    )
    moved.rename(vanishing)
    assert wait_until(lambda: rt.capture.states["gone"].state == "live")
    assert rt.capture.states["gone"].reconnects >= 1

    bad = {
        f"{ROOT}/bin": [
            b"not json",
            json.dumps({"bin_id": 5, "camera": "replay", "event_id": "e"}).encode(),
            json.dumps({"bin_id": "B", "camera": "nope", "event_id": "e"}).encode(),
            b'{"bin_id": "B", "camera": "replay", "event_id": "' + b"x" * 70_000 + b'"}',
        ],
        "binwatch/v1/s1/manifest/B9": [
            b"{",
            json.dumps({"EXPECTED_QUANTITY": "three"}).encode(),
            b'{"EXPECTED_QUANTITY": 1, "pad": "' + b"x" * 300_000 + b'"}',
        ],
        f"{ROOT}/cmd/reload": [
            b"\x00\x01",
            json.dumps({"request_id": 5}).encode(),
            b"{" + b" " * 70_000 + b"}",
        ],
        f"{ROOT}/cmd/selfdestruct": [json.dumps({"request_id": "r9"}).encode()],
    }
    for topic, payloads in bad.items():
        for p in payloads:
            publish(mosquitto.url, topic, p)
    expected = {
        "bin:invalid": 2,
        "bin:unknown-camera": 1,
        "bin:oversized": 1,
        "manifest:invalid": 2,
        "manifest:oversized": 1,
        "cmd:invalid": 2,
        "cmd:oversized": 1,
        "cmd:unknown-command": 1,
    }
    assert wait_until(lambda: rt.metrics.invalid_counts == expected), rt.metrics.invalid_counts
    assert rt.manifests.lookup("B9") == (None, "none")

    # the agent keeps running: the replay finishes and a valid command is answered
    publish(mosquitto.url, f"{ROOT}/cmd/resync", {"request_id": "ok1"})
    assert wait_until(lambda: col.on("/cmd/resync/result"))
    assert CommandResult.parse(col.on("/cmd/resync/result")[0][1]).ok
    unknown = CommandResult.parse(col.on("/cmd/selfdestruct/result")[0][1])
    assert not unknown.ok and "unknown command" in unknown.detail
    assert wait_until(lambda: rt.capture.states["replay"].state == "finished")
    assert wait_until(lambda: len([v for v in verdict_log() if v["camera"] == "replay"]) == SYNTH_COUNT - 2)
    assert rt.endpoints.health()[0]

    def latest_stats() -> Stats | None:
        s = [Stats.parse(p) for _t, p, _r in col.on("/stats")]
        return s[-1] if s else None

    assert wait_until(
        lambda: (
            (s := latest_stats()) is not None
            and s.invalid_messages == expected
            and s.cameras["replay"].decode_errors == 2
            and s.cameras["replay"].frames_total == SYNTH_COUNT - 2
        )
    )
    st = latest_stats()
    assert st.cameras["replay"].frames_total == SYNTH_COUNT - 2
    assert st.decode_errors == sum(c.decode_errors for c in st.cameras.values()) == 4  # 2 in each replay
    usb = rt.capture.states["usb"]
    assert usb.state == "reconnecting" and usb.open_failures >= 3 and "cannot open" in usb.last_error
    # each cause was logged
    for cause in (
        "(invalid)",
        "(oversized)",
        "(unknown-camera)",
        "(unknown-command)",
        "00003.jpg: empty image",
        "00007.jpg: not a decodable image",
        "replay folder",
        "disappeared",
    ):
        assert cause in caplog.text, cause


@pytest.mark.slow
def test_broker_down_20s_mid_run_every_alert_arrives(
    persistent_broker, persistent_alerts, e2e_config, synth_bins: Path, verdict_log, make_runtime
) -> None:
    broker, col = persistent_broker, persistent_alerts
    cfg = e2e_config(broker.url, mismatched=synth_bins)
    cfg.cameras[0].replay_rate = 9  # ~22 s of frames: the outage falls in the middle
    rt = make_runtime(cfg, exit_when_done=True)
    assert wait_until(lambda: len(col.alerts()) >= 3)
    broker.stop()
    down_at = time.time()
    time.sleep(20)
    up_at = time.time()
    during = {
        v["alert_id"] for v in verdict_log() if v["verdict"] == "mismatch" and down_at + 1 < v["ts"] < up_at
    }
    assert during, "alerts were decided during the outage"
    assert rt.outbox.depth() >= len(during)
    broker.start()
    rt.run()
    decided = _mismatch_ids(verdict_log())
    assert wait_until(lambda: col.alert_ids() >= decided, timeout=30)
    alerts = col.alerts()
    assert {a.alert_id for a in alerts} == decided
    historical = {a.alert_id for a in alerts if a.is_historical}
    assert during <= historical
    seqs = sorted({a.seq for a in alerts})
    assert seqs == list(range(1, len(decided) + 1))


def test_agent_starts_with_the_broker_down_then_delivers(
    persistent_broker, persistent_alerts, e2e_config, synth_bins: Path, verdict_log, make_runtime
) -> None:
    broker, col = persistent_broker, persistent_alerts
    broker.stop()
    cfg = e2e_config(broker.url, mismatched=synth_bins)
    rt = make_runtime(cfg, max_frames=80)
    assert wait_until(lambda: len(verdict_log()) == 80)
    decided = _mismatch_ids(verdict_log())
    assert decided and not rt.link.connected
    assert rt.outbox.depth() == len(decided)  # counted and buffered
    broker.start()
    assert wait_until(lambda: col.alert_ids() >= decided, timeout=30)
    assert all(a.is_historical for a in col.alerts())
    assert wait_until(lambda: rt.outbox.depth() == 0)


def _agent_args(bundle: Path, replay: Path, state: Path, broker: str, *extra: str) -> list[str]:
    """``python -m agent run`` on ``replay`` against its partly wrong manifest, one thread, any
    free HTTP port, plus ``extra`` flags."""
    flags = {
        "--model": bundle,
        "--replay": replay,
        "--manifest": replay / "manifest-mismatch",
        "--broker": broker,
        "--state-dir": state,
        "--http-port": 0,
        "--threads": 1,
    }
    args = [str(x) for flag, value in flags.items() for x in (flag, value)]
    return [sys.executable, "-m", "agent", "run", *args, *extra]


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_sigkill_mid_run_then_restart_loses_nothing_and_seq_continues(
    mosquitto, collector, tiny_bundle: Path, synth_bins: Path, tmp_path: Path, state_dir: Path, verdict_log
) -> None:
    col = collector
    args = _agent_args(
        tiny_bundle,
        synth_bins,
        state_dir,
        mosquitto.url,
        *("--site", "s1", "--device", "d1", "--replay-rate", "40", "--exit-when-done"),
    )
    log = tmp_path / "agent.log"
    p = _spawn(args, log)
    try:
        assert wait_until(lambda: len(verdict_log()) >= 60, timeout=60), log.read_text()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        p.kill()
    first = verdict_log()
    first_max_seq = max(v["seq"] for v in first if v["verdict"] == "mismatch")
    assert len(first) < SYNTH_COUNT
    will = retained(mosquitto.url, f"{ROOT}/status")
    assert will is not None and json.loads(will)["state"] == "offline"  # the last will

    p2 = _spawn(args, log)
    assert p2.wait(120) == 0, log.read_text()[-3000:]
    verdicts = verdict_log()
    second = verdicts[len(first) :]
    # resumed near where it stopped (the replay position is saved every 0.25 s); a frame decided
    # again gives an alert with the same alert_id, so consumers see a duplicate, never a new alert
    assert second and 1 < int(second[0]["bin_id"]) <= int(first[-1]["bin_id"]) + 1
    again = {v["bin_id"] for v in first} & {v["bin_id"] for v in second}
    assert len(again) <= 30, len(again)
    ids_first = {v["bin_id"]: v.get("alert_id") for v in first}
    for v in second:
        if v["bin_id"] in again and v["verdict"] == "mismatch":
            assert v["alert_id"] == ids_first[v["bin_id"]]
    assert {v["bin_id"] for v in verdicts} == {
        f"{i:05d}" for i in range(1, SYNTH_COUNT + 1)
    }  # resumed, none skipped
    decided = {v["alert_id"] for v in verdicts if v["verdict"] == "mismatch"}
    assert wait_until(lambda: col.alert_ids() >= decided, timeout=30)
    alerts = col.alerts()
    assert {a.alert_id for a in alerts} == decided
    new_seqs = [v["seq"] for v in second if v["verdict"] == "mismatch"]
    assert new_seqs and min(new_seqs) == first_max_seq + 1  # seq continues after the crash
    seqs = sorted({a.seq for a in alerts})
    assert seqs == list(range(1, max(seqs) + 1))  # no gap
    assert json.loads(retained(mosquitto.url, f"{ROOT}/status"))["state"] == "stopped"


def test_sigterm_stops_cleanly_and_keeps_the_outbox(
    tiny_bundle: Path, synth_bins: Path, tmp_path: Path, state_dir: Path, verdict_log
) -> None:
    from tests.broker import free_port

    args = _agent_args(tiny_bundle, synth_bins, state_dir, f"mqtt://127.0.0.1:{free_port()}")
    log = tmp_path / "agent.log"
    p = _spawn(args, log)
    try:
        assert wait_until(lambda: len(_mismatch_ids(verdict_log())) >= 5, timeout=60), log.read_text()
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, log.read_text()[-3000:]
    finally:
        p.kill()
    text = log.read_text()
    assert "received SIGTERM: stopping" in text and "agent stopped" in text
    with Outbox(state_dir) as ob:  # nothing reached the (absent) broker; nothing was thrown away
        assert ob.depth() == len(_mismatch_ids(verdict_log()))


def test_the_agent_never_loads_torch(mosquitto, tiny_bundle: Path, synth_bins: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from agent.cli import app\n"
        "try:\n"
        f"    app(['run', '--model', {str(tiny_bundle)!r}, '--replay', {str(synth_bins)!r},"
        f" '--broker', {mosquitto.url!r}, '--state-dir', {str(tmp_path / 'st')!r}, '--max-frames', '5',"
        " '--http-port', '0'], standalone_mode=False)\n"
        "finally:\n"
        "    roots = ('torch', 'torchvision', 'training', 'export')\n"
        "    bad = sorted(m for m in sys.modules if m.split('.')[0] in roots)\n"
        "    print('FORBIDDEN', bad)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FORBIDDEN []" in out.stdout, out.stdout
    assert len(read_verdicts(tmp_path / "st" / "verdicts.jsonl")) == 5
