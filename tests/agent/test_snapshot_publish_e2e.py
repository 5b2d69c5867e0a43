"""The whole agent on a replay camera against a real mosquitto: every mismatch alert it decides
arrives with its JPEG on ``alert/snapshot/<alert_id>``, the very bytes of the replayed frame, whose
sha256 the alert names (docs/delivery.md, "Snapshots")."""

from __future__ import annotations

import hashlib
from pathlib import Path

from contract.topics import Topics
from tests.agent.mqtt_helpers import wait_until
from tests.hw import requires_mosquitto

pytestmark = requires_mosquitto

FRAMES = 60


def test_every_alert_decided_by_the_agent_arrives_with_its_picture(
    mosquitto, collector, e2e_config, synth_bins: Path, verdict_log, make_runtime
) -> None:
    col = collector
    rt = make_runtime(e2e_config(mosquitto.url, mismatched=synth_bins), max_frames=FRAMES)
    assert wait_until(lambda: len(verdict_log()) == FRAMES, timeout=120)
    decided = {v["alert_id"]: v["bin_id"] for v in verdict_log() if v["verdict"] == "mismatch"}
    assert decided, "the replay decides some mismatches"

    def pictures() -> dict[str, bytes]:
        return {t.rsplit("/", 1)[-1]: p for t, p, _r in col.on("") if "/alert/snapshot/" in t}

    assert wait_until(lambda: col.alert_ids() >= set(decided) and set(pictures()) >= set(decided))
    got = pictures()
    assert set(got) == set(decided)  # a picture for each alert, and for nothing else
    topics = Topics("s1", "d1")
    for a in col.alerts():
        assert a.snapshot is not None and a.snapshot.topic == topics.alert_snapshot(a.alert_id)
        jpeg = got[a.alert_id]
        assert hashlib.sha256(jpeg).hexdigest() == a.snapshot.sha256 and a.snapshot.size == len(jpeg)
        assert jpeg == (synth_bins / "bin-images" / f"{decided[a.alert_id]}.jpg").read_bytes()
    assert wait_until(lambda: rt.outbox.snapshot_depth() == 0)
    assert rt.outbox.snapshots_dropped() == (0, 0)


def test_a_full_picture_budget_shows_in_the_metrics_and_keeps_every_alert(
    e2e_config, synth_bins: Path, verdict_log, make_runtime
) -> None:
    from tests.broker import free_port

    budget = 8 * 1024  # a few of the replay's small JPEGs
    cfg = e2e_config(
        f"mqtt://127.0.0.1:{free_port()}",  # no broker: everything waits in the outbox
        mismatched=synth_bins,
        snapshots={"enabled": True, "publish": True, "outbox_max_bytes": budget},
    )
    rt = make_runtime(cfg, max_frames=FRAMES)
    assert wait_until(lambda: len(verdict_log()) == FRAMES and rt.delivery.pending() == 0, timeout=120)
    alerts = sum(1 for v in verdict_log() if v["verdict"] == "mismatch")
    rt.housekeeper.tick()  # refreshes the gauges (every 0.5 s anyway)
    text = rt.endpoints.metrics_text()[0].decode()
    dropped, _bytes = rt.outbox.snapshots_dropped()
    waiting = rt.outbox.snapshot_depth()
    assert dropped > 0 and waiting + dropped == alerts  # pictures gave way ...
    assert rt.outbox.depth() == alerts  # ... never an alert
    assert f"binwatch_snapshots_dropped {float(dropped)}" in text
    assert f"binwatch_snapshots_waiting {float(waiting)}" in text
