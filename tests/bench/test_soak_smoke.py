"""``bench/soak.py`` end to end, shortened: 30 s, the broker restarted every 10 s, bin events at
1/s, the tiny model. Checks the files, the summary's shape and that traffic flowed both ways;
whether anything was lost is the soak's own verdict (its exit status), not asserted here.
Takes ~40-55 s on a 2-core box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hw import REPO, requires_mosquitto

pytestmark = [requires_mosquitto, pytest.mark.mqtt, pytest.mark.timeout(240)]

SUMMARY_KEYS = {
    "duration_s",
    "samples",
    "broker_restarts",
    "resources",
    "alerts",
    "events",
    "agent",
    "outbox_depth_end",
    "drain_s",
    "failures",
}
SAMPLE_KEYS = {
    "t",
    "rss_mib",
    "fds",
    "threads",
    "outbox_depth",
    "outbox_rows_db",
    "alerts_decided",
    "alerts_received",
    "events_sent",
    "outcomes_received",
    "broker_up",
}


def test_soak_smoke(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    cmd = [sys.executable, str(REPO / "bench" / "soak.py"), "--minutes", "0.5", "--broker-restart-s", "10"]
    cmd += ["--sample-s", "3", "--drain-s", "20", "--bins", "16", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=220)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]

    doc = json.loads((out / "soak.json").read_text())
    assert (out / "soak.png").stat().st_size > 10_000
    s = doc["summary"]
    assert set(s) >= SUMMARY_KEYS
    assert (proc.returncode == 1) == bool(s["failures"]), s["failures"]
    assert s["broker_restarts"] >= 2
    assert s["samples"] == len(doc["samples"]) >= 5
    assert all(set(x) >= SAMPLE_KEYS for x in doc["samples"])
    assert {"rss_warm_mib", "rss_end_mib", "rss_growth_pct", "fds_max", "threads_max"} <= set(s["resources"])

    alerts, events = s["alerts"], s["events"]
    assert alerts["decided"] > 0 and alerts["received"] > 0
    assert events["sent"] > 0 and events["reached_agent"] > 0
    if events["outcomes_supported"]:
        assert events["outcomes"] > 0
    assert "soak:" in proc.stdout and "alerts" in proc.stdout
