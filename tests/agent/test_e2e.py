"""End to end against a real mosquitto, on the CPU with ONNX Runtime: replayed synthetic bins with
a partly wrong manifest, bin events, commands, model swap, and the local HTTP endpoint."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections import Counter
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from contract.messages import CommandResult, ModelReported, Result, Stats, Status
from tests.agent.bundles import make_tiny_bundle
from tests.agent.conftest import SYNTH_COUNT, event_camera
from tests.agent.mqtt_helpers import ROOT, publish, retained, wait_until
from tests.hw import requires_mosquitto

pytestmark = requires_mosquitto

VERDICT_KINDS = ("match", "mismatch", "uncertain", "no_manifest", "failed")


def test_replay_every_decided_mismatch_arrives_once_and_matches_never(
    mosquitto, collector, e2e_config, synth_bins: Path, state_dir: Path, verdict_log, make_runtime
) -> None:
    col = collector
    cfg = e2e_config(mosquitto.url, mismatched=synth_bins, mqtt={"publish_results": True})
    rt = make_runtime(cfg, exit_when_done=True)
    assert rt.run() == 0

    verdicts = verdict_log()
    assert len(verdicts) == SYNTH_COUNT
    assert [v["bin_id"] for v in verdicts] == [f"{i:05d}" for i in range(1, SYNTH_COUNT + 1)]
    by_kind = {k: [v for v in verdicts if v["verdict"] == k] for k in ("match", "mismatch", "uncertain")}
    assert by_kind["match"] and by_kind["mismatch"], "the test needs both verdicts to mean anything"

    # the manifest folder (not the frames' own metadata) gave the expected quantities
    manifest = json.loads((synth_bins / "mismatch.json").read_text())["mismatched"]
    for v in verdicts:
        assert v["expected_source"] == "dir"
        if v["bin_id"] in manifest:
            assert v["expected_qty"] == manifest[v["bin_id"]]["manifest_quantity"]

    mismatch_ids = {v["alert_id"] for v in by_kind["mismatch"]}
    assert wait_until(lambda: col.alert_ids() >= mismatch_ids)
    alerts = col.alerts()
    assert len(alerts) == len({a.alert_id for a in alerts}) == len(mismatch_ids)  # unique, no duplicates
    assert {a.alert_id for a in alerts} == mismatch_ids  # and nothing else: no alert for a match
    assert sorted(a.seq for a in alerts) == list(range(1, len(alerts) + 1))
    match_bins = {v["bin_id"] for v in by_kind["match"]}
    log_by_id = {v["alert_id"]: v for v in by_kind["mismatch"]}
    for a in alerts:
        assert a.bin_id not in match_bins
        v = log_by_id[a.alert_id]
        assert (a.bin_id, a.expected_qty, a.predicted_qty, a.seq) == (
            v["bin_id"],
            v["expected_qty"],
            v["predicted_qty"],
            v["seq"],
        )
        assert a.p_expected < 0.1 and not a.is_historical and a.frames == 1
        assert (a.site, a.device, a.camera) == ("s1", "d1", "replay")
        assert a.model.name == "tiny-count" and a.model.backend == "onnxruntime-cpu"
        snap = Path(urlparse(a.snapshot.uri).path)
        assert hashlib.sha256(snap.read_bytes()).hexdigest() == a.snapshot.sha256
        assert snap.read_bytes() == (synth_bins / "bin-images" / f"{a.bin_id}.jpg").read_bytes()

    # results (QoS 0, best effort) agree with the verdict log
    results = [Result.parse(p) for _t, p, _r in col.on("/result")]
    assert results
    verdict_of = {v["bin_id"]: v["verdict"] for v in verdicts}
    for r in results:
        assert r.verdict == verdict_of[r.bin_id]

    stats = [Stats.parse(p) for _t, p, _r in col.on("/stats")]
    assert stats and stats[-1].backend == "onnxruntime-cpu"
    # stats count the verdicts by kind: totals that only grow, and the last one (published at the
    # clean stop) holds every verdict of the run, as the verdict log has them
    counted = Counter(v["verdict"] for v in verdicts)
    want = {k: counted[k] for k in VERDICT_KINDS}
    assert sum(want.values()) == SYNTH_COUNT and want["mismatch"] == len(mismatch_ids)

    def last_verdicts() -> dict[str, int]:
        return Stats.parse(col.on("/stats")[-1][1]).verdicts

    assert wait_until(lambda: last_verdicts() == want), (last_verdicts(), want)
    stats = [Stats.parse(p) for _t, p, _r in col.on("/stats")]
    assert all(set(s.verdicts) == set(VERDICT_KINDS) for s in stats)
    for before, after in pairwise(stats):
        assert all(after.verdicts[k] >= before.verdicts[k] for k in VERDICT_KINDS)
    statuses = [Status.parse(p) for _t, p, _r in col.on("/status")]
    assert statuses[0].state == "online" and statuses[-1].state == "stopped"
    assert statuses[-1].model is not None and statuses[-1].model.name == "tiny-count"
    reported = [ModelReported.parse(p) for _t, p, _r in col.on("/model/reported")]
    assert reported, "model state reported"
    final = retained(mosquitto.url, "binwatch/v1/s1/d1/model/reported")  # what the fleet sees now
    assert final is not None, [r.state for r in reported]
    assert (ModelReported.parse(final).state, ModelReported.parse(final).version) == ("active", 1), [
        r.state for r in reported
    ]
    # a finished replay is not resumed by the next run
    assert not (state_dir / "replay" / "replay.json").exists()


def test_bin_events_commands_and_model_swap(
    mosquitto, collector, e2e_config, synth_bins: Path, tmp_path: Path, verdict_log, make_runtime
) -> None:
    """A looping replay camera in event mode stands in for a live camera."""
    col = collector
    cfg = e2e_config(
        mosquitto.url,
        cameras=[event_camera(synth_bins, rate=30)],
        decision={"frames_per_event": 3, "mismatch_threshold": 0.99, "match_threshold": 0.995},
    )
    rt = make_runtime(cfg)
    assert wait_until(lambda: rt.link.connected and rt.capture.states["cam0"].frames > 5)

    # idle frames are not decided
    assert not verdict_log()

    ev = {"bin_id": "A-17", "camera": "cam0", "event_id": "ev-1", "expected_qty": 3, "frames": 2}
    publish(mosquitto.url, f"{ROOT}/bin", ev)
    assert wait_until(lambda: col.on("/alert/mismatch"))
    (alert,) = col.alerts()
    assert (alert.bin_id, alert.event_id, alert.expected_qty, alert.frames) == ("A-17", "ev-1", 3, 2)

    # the manifest from a retained message, when the event has no quantity
    publish(mosquitto.url, "binwatch/v1/s1/manifest/A-18", {"EXPECTED_QUANTITY": 4}, retain=True)
    assert wait_until(lambda: rt.manifests.lookup("A-18")[0] == 4)
    publish(mosquitto.url, f"{ROOT}/bin", {"bin_id": "A-18", "camera": "cam0", "event_id": "ev-2"})
    assert wait_until(lambda: len(col.alerts()) == 2)
    assert col.alerts()[1].expected_qty == 4 and col.alerts()[1].frames == 3

    # cmd/capture decides like an event and answers with the verdict
    req = {"request_id": "r1", "args": {"bin_id": "A-19", "expected_qty": 1, "frames": 1}}
    publish(mosquitto.url, f"{ROOT}/cmd/capture", req)
    assert wait_until(lambda: col.on("/cmd/capture/result"))
    res = CommandResult.parse(col.on("/cmd/capture/result")[0][1])
    assert res.ok and res.request_id == "r1" and res.detail == "mismatch"

    # cmd/reload swaps in a new bundle without stopping capture; a bad one keeps the old model
    v2 = make_tiny_bundle(tmp_path / "v2", version=2, seed=5)
    frames_before = rt.capture.states["cam0"].frames
    publish(mosquitto.url, f"{ROOT}/cmd/reload", {"request_id": "r2", "args": {"bundle": str(v2)}})
    assert wait_until(lambda: col.on("/cmd/reload/result"))
    res = CommandResult.parse(col.on("/cmd/reload/result")[0][1])
    assert res.ok, res.detail
    assert rt.store.current.card.version == 2
    assert wait_until(
        lambda: any(
            Status.parse(p).model and Status.parse(p).model.version == 2 for _t, p, _r in col.on("/status")
        )
    )
    assert rt.capture.states["cam0"].frames > frames_before
    publish(mosquitto.url, f"{ROOT}/cmd/reload", {"request_id": "r3", "args": {"bundle": str(tmp_path)}})
    assert wait_until(lambda: len(col.on("/cmd/reload/result")) == 2)
    res = CommandResult.parse(col.on("/cmd/reload/result")[1][1])
    assert not res.ok and "previous model kept" in res.detail
    assert rt.store.current.card.version == 2

    # a new event on the camera ends the previous one: decided once, on the frames it has
    n = len(verdict_log())
    long_ev = {"bin_id": "L1", "camera": "cam0", "event_id": "long", "expected_qty": 1, "frames": 32}
    publish(mosquitto.url, f"{ROOT}/bin", long_ev)
    assert wait_until(lambda: rt.tracker.get("cam0") is not None and rt.tracker.get("cam0").count >= 2)
    short_ev = {"bin_id": "S1", "camera": "cam0", "event_id": "short", "expected_qty": 1, "frames": 1}
    publish(mosquitto.url, f"{ROOT}/bin", short_ev)
    assert wait_until(lambda: len(verdict_log()) == n + 2)
    long_v, short_v = verdict_log()[n:]
    assert (long_v["event_id"], short_v["event_id"]) == ("long", "short")
    assert 2 <= long_v["frames"] < 32 and short_v["frames"] == 1


def test_event_on_a_camera_without_frames_times_out(mosquitto, e2e_config, verdict_log, make_runtime) -> None:
    cam = {"name": "usb", "source": "/dev/video99", "backoff_min_s": 0.2, "backoff_max_s": 0.5}
    cfg = e2e_config(mosquitto.url, cameras=[cam], decision={"event_timeout_s": 0.5})
    rt = make_runtime(cfg)
    assert wait_until(lambda: rt.link.connected)
    ev = {"bin_id": "B1", "camera": "usb", "event_id": "e1", "expected_qty": 1}
    publish(mosquitto.url, f"{ROOT}/bin", ev)
    assert wait_until(verdict_log)
    (v,) = verdict_log()
    assert v["verdict"] == "failed" and "no frame from camera usb" in v["reason"]
    assert rt.metrics.verdict_counts["failed"] == 1
    assert rt.capture.states["usb"].state == "reconnecting"


def test_http_endpoints(mosquitto, e2e_config, synth_bins: Path, state_dir: Path, make_runtime) -> None:
    cfg = e2e_config(mosquitto.url, replay=synth_bins)
    cfg.cameras[0].replay_rate = 20
    rt = make_runtime(cfg)
    base = rt.http.url
    assert (state_dir / "http.url").read_text().strip() == base

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(path: str, data: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(
            base + path, data=data, method="POST", headers={"Content-Type": "image/jpeg"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert get("/healthz")[0] == 200
    assert wait_until(lambda: get("/readyz")[0] == 200)
    code, body = get("/readyz")
    assert json.loads(body)["model"]["name"] == "tiny-count"
    assert wait_until(lambda: rt.metrics.counts["frames"] >= 3)
    code, text = get("/metrics")
    assert code == 200
    assert b'binwatch_frames_total{camera="replay"}' in text and b"binwatch_stage_seconds_bucket" in text

    jpeg = (synth_bins / "bin-images" / "00001.jpg").read_bytes()
    code, out = post("/v1/count", jpeg)
    assert code == 200
    assert set(out["distribution"]) == {"0", "1", "2", "3", "4", "5+"}
    assert abs(sum(out["distribution"].values()) - 1) < 1e-4
    assert "verdict" not in out and out["model"]["version"] == 1
    code, out2 = post("/v1/count?expected=2", jpeg)
    assert code == 200 and out2["verdict"] in ("match", "mismatch", "uncertain")
    assert out2["distribution"] == out["distribution"]
    assert post("/v1/count", b"garbage")[0] == 400
    assert post("/v1/count?expected=x", jpeg)[0] == 400
    assert get("/nope")[0] == 404


@pytest.mark.parametrize("policy", ["more_frames"])
def test_uncertain_captures_more_frames(
    policy: str, mosquitto, collector, e2e_config, synth_bins: Path, verdict_log, make_runtime
) -> None:
    # every p_expected is "uncertain" with these thresholds: the event grows to max_frames
    cfg = e2e_config(
        mosquitto.url,
        cameras=[event_camera(synth_bins, rate=50)],
        decision={
            "frames_per_event": 2,
            "mismatch_threshold": 0.0,
            "match_threshold": 1.0,
            "uncertain_policy": policy,
            "max_frames": 5,
        },
    )
    rt = make_runtime(cfg)
    assert wait_until(lambda: rt.link.connected and rt.capture.states["cam0"].frames > 2)
    publish(
        mosquitto.url, f"{ROOT}/bin", {"bin_id": "U1", "camera": "cam0", "event_id": "u1", "expected_qty": 2}
    )
    assert wait_until(verdict_log)
    (v,) = verdict_log()
    assert v["verdict"] == "uncertain" and v["frames"] == 5
    assert not collector.on("/alert/mismatch")


def test_two_cameras_are_inferred_in_shared_batches(
    mosquitto, e2e_config, synth_bins: Path, verdict_log, make_runtime
) -> None:
    from agent.inference.backends.fake import FakeBackend

    fake = FakeBackend(lambda x: np.tile([0, 0, 5.0, 0, 0, 0], (len(x), 1)), delay_s=0.02)
    cams = [{"name": n, "source": str(synth_bins), "kind": "replay"} for n in ("left", "right")]
    cfg = e2e_config(mosquitto.url, cameras=cams, model={"batch": 8})
    rt = make_runtime(cfg, backend_factory=lambda: fake, max_frames=120)
    rt.run()
    verdicts = verdict_log()
    assert len(verdicts) == 120 and {v["camera"] for v in verdicts} == {"left", "right"}
    assert all(v["predicted_qty"] == 2 for v in verdicts)
    warmup = 2
    assert fake.frames - warmup == 120
    assert fake.calls - warmup < 120 / 2  # batches of several frames, not one call per frame
