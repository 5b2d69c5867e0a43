"""Each agent stage on its own, with its collaborators passed in (docs/architecture.md, "Seams").

The sinks, repliers and reporters here are small fakes at the seams, named ``Fake*``; the real
parts (SQLite outbox, MQTT link, mosquitto) are exercised end to end in test_e2e*.py. The model is
the real tiny ONNX bundle on ONNX Runtime, and the verdict log and replay cursors are real files.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from agent.commands import Commands
from agent.delivery.deliver import Delivery, alert_id_for
from agent.delivery.records import ReplayCursors, VerdictLog, read_verdicts
from agent.delivery.replies import CommandReplier
from agent.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
from agent.inference.decision import decide
from agent.inference.model_store import ModelStore
from agent.inference.pipeline import Decided, InferencePipeline
from agent.intake.hub import CameraState, FrameHub
from agent.intake.inbound import MessageHandler, Refusals
from agent.intake.manifests import ManifestStore
from agent.intake.presentations import Presentation
from agent.intake.sources import Frame
from agent.metrics import AgentMetrics
from contract.messages import Alert, CommandResult, ModelRef, Result

# -- fakes at the seams ---------------------------------------------------------------------------


class FakeSink:
    """Stands in for the MQTT link (AlertSink + ResultOutbox): numbers alerts like the outbox does."""

    session = 7

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.results: list[Result] = []
        self.command_results: list[tuple[str, CommandResult]] = []

    def enqueue_alert(self, alert: Alert) -> Alert:
        stored = alert.model_copy(update={"seq": len(self.alerts) + 1, "session": self.session})
        self.alerts.append(stored)
        return stored

    def publish_result(self, payload: Result) -> bool:
        self.results.append(payload)
        return True

    def enqueue_command_result(self, name: str, result: CommandResult) -> None:
        self.command_results.append((name, result))


class FakeVerdictSink:
    """Stands in for Delivery: records what the pipeline hands over."""

    def __init__(self) -> None:
        self.decided: list[Decided] = []
        self.failed: list[tuple[Presentation, str]] = []

    def deliver(self, item: Decided) -> None:
        self.decided.append(item)

    def fail(self, pres: Presentation, reason: str) -> None:
        self.failed.append((pres, reason))


class FakeModelState:
    def __init__(self) -> None:
        self.republished = 0

    def republish(self) -> None:
        self.republished += 1


# -- helpers ----------------------------------------------------------------------------------------


def _frame(
    camera: str = "cam0", *, index: int = 0, bin_id: Optional[str] = "b1", qty: Optional[int] = 3
) -> Frame:
    img = np.full((40, 40, 3), 90 + 10 * index, dtype=np.uint8)
    return Frame(
        camera=camera,
        image=img,
        ts=time.time(),
        mono=time.monotonic(),
        index=index,
        bin_id=bin_id,
        expected_qty=qty,
    )


def _store(bundle: Path, tmp_path: Path) -> ModelStore:
    store = ModelStore(lambda: OnnxRuntimeBackend(threads=1), models_dir=tmp_path / "models", warmup=1)
    store.load(bundle)
    return store


class _Cam:
    def __init__(self, name: str, trigger: str = "per_frame") -> None:
        self.name, self.resolved_trigger, self.bin_id, self.interval_s = name, trigger, None, 0


class _DecisionCfg:
    uncertain_policy = "decide"
    max_frames = 8
    frames_per_event = 2
    event_timeout_s = 5.0


def _decided(bundle: Path, tmp_path: Path, expected: int) -> Decided:
    """A real decision of the tiny model on one frame, as the pipeline would hand it over."""
    store = _store(bundle, tmp_path)
    with store.use() as model:
        from agent.inference.preprocess import preprocess

        f = _frame(qty=expected)
        logits = model.backend.infer(preprocess(f.image, model.card.input)[None])
        pres = Presentation(camera="cam0", bin_id="b1", event_id="e1", kind="frame", needed=1, replay_index=4)
        pres.add(f, logits[0])
        d = decide(np.stack(pres.logits), model.card.output, expected, model.thresholds)
        return Decided(pres, d, model.ref, "frame", overflow=model.card.output.overflow)


# -- delivery ---------------------------------------------------------------------------------------


def _delivery(tmp_path: Path, sink: FakeSink, **kw: Any) -> tuple[Delivery, ReplayCursors, VerdictLog]:
    cursors = ReplayCursors(tmp_path / "replay")
    cursors.begin("cam0", str(tmp_path / "frames"), resume=True)
    log = VerdictLog(tmp_path / "verdicts.jsonl")
    d = Delivery(
        site="s1",
        device="d1",
        sink=sink,
        replies=CommandReplier(sink),
        metrics=AgentMetrics(),
        cursors=cursors,
        verdict_log=log,
        **kw,
    )
    return d, cursors, log


def _run(delivery: Delivery) -> None:
    t = threading.Thread(target=delivery.loop, daemon=True)
    t.start()
    delivery.close()
    t.join(10)
    assert not t.is_alive()


def test_delivery_stores_a_mismatch_alert_logs_and_advances_the_replay(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    sink = FakeSink()
    delivery, cursors, log = _delivery(tmp_path, sink, publish_results=True)
    item = _decided(tiny_bundle, tmp_path, expected=0)
    verdict = item.decision.verdict
    delivery.deliver(item)
    _run(delivery)
    log.close()
    records = read_verdicts(tmp_path / "verdicts.jsonl")
    assert [r["verdict"] for r in records] == [verdict]
    if verdict == "mismatch":
        assert [a.alert_id for a in sink.alerts] == [alert_id_for("s1", "d1", item.pres)]
        assert records[0]["alert_id"] == sink.alerts[0].alert_id and records[0]["seq"] == 1
        assert sink.alerts[0].model == item.ref and sink.alerts[0].session == 7
    else:
        assert sink.alerts == []
    assert [r.verdict for r in sink.results] == [verdict]  # expected qty known: a result goes out
    assert cursors.position("cam0") == 5  # the next frame after index 4
    assert delivery.pending() == 0


def test_delivery_reports_a_failed_presentation_and_answers_its_capture_command(tmp_path: Path) -> None:
    sink = FakeSink()
    delivery, _cursors, log = _delivery(tmp_path, sink)
    pres = Presentation(
        camera="cam0", bin_id="b9", event_id="cmd-r1", kind="capture", needed=2, request_id="r1"
    )
    delivery.fail(pres, "no frame from camera cam0 within 5s")
    _run(delivery)
    log.close()
    assert [(r["verdict"], r["reason"]) for r in read_verdicts(tmp_path / "verdicts.jsonl")] == [
        ("failed", "no frame from camera cam0 within 5s")
    ]
    assert [(n, r.request_id, r.ok) for n, r in sink.command_results] == [("capture", "r1", False)]
    assert sink.alerts == [] and sink.results == []


def test_replier_bounds_and_sanitises_the_data(tmp_path: Path) -> None:
    sink = FakeSink()
    CommandReplier(sink).done(
        "reload", "r2", True, "x" * 5000, data={f"k{i}": i for i in range(40)} | {"o": object()}
    )
    ((name, result),) = sink.command_results
    assert name == "reload" and len(result.detail) == 4000 and len(result.data) == 32
    assert "o" not in result.data


# -- inference pipeline ------------------------------------------------------------------------------


def _pipeline(
    bundle: Path, tmp_path: Path, sink: FakeVerdictSink, **kw: Any
) -> tuple[InferencePipeline, FrameHub]:
    hub = FrameHub()
    hub.add_camera(CameraState(name="cam0"), capacity=4, drop=False)
    p = InferencePipeline(
        cameras=[_Cam("cam0", kw.pop("trigger", "per_frame"))],
        decision=_DecisionCfg(),
        batch=4,
        store=_store(bundle, tmp_path),
        hub=hub,
        manifests=ManifestStore(),
        metrics=AgentMetrics(),
        sink=sink,
        stop_event=threading.Event(),
        **kw,
    )
    return p, hub


def _until(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_pipeline_decides_each_replay_frame_and_drains(tiny_bundle: Path, tmp_path: Path) -> None:
    sink = FakeVerdictSink()
    p, hub = _pipeline(tiny_bundle, tmp_path, sink, run_ids={"cam0": "run1"})
    t = threading.Thread(target=p.loop, daemon=True)
    t.start()
    stop = threading.Event()
    for i in range(3):
        f = _frame(index=i, bin_id=f"b{i}", qty=i)
        p.prepare(f)
        assert f.tensor is not None  # per-frame camera: preprocessed on the capture side
        hub.put(f, stop)
    assert _until(lambda: len(sink.decided) == 3 and p.drained())
    p.stop_event.set()
    t.join(5)
    assert [d.pres.bin_id for d in sink.decided] == ["b0", "b1", "b2"]
    assert [d.pres.event_id for d in sink.decided] == [f"replay-run1-{i:07d}" for i in range(3)]
    assert [d.decision.expected_qty for d in sink.decided] == [0, 1, 2]  # from each frame's metadata
    assert all(d.expected_source == "frame" for d in sink.decided)


def test_pipeline_closes_a_superseded_event_without_frames_as_failed(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    sink = FakeVerdictSink()
    p, _hub = _pipeline(tiny_bundle, tmp_path, sink, trigger="event")
    first = Presentation(camera="cam0", bin_id="b1", event_id="e1", kind="event", needed=2)
    p.start_presentation(first)
    p.start_presentation(Presentation(camera="cam0", bin_id="b2", event_id="e2", kind="event", needed=2))
    assert [(pres.event_id, reason) for pres, reason in sink.failed] == [("e1", "superseded by event e2")]
    assert not p.drained()  # e2 is still open
    p.close_all("the agent is stopping")
    assert [pres.event_id for pres, _ in sink.failed] == ["e1", "e2"] and p.drained()


# -- inbound messages and commands -----------------------------------------------------------------


def _inbound(
    started: list[Presentation], commands: list[tuple[str, str, bytes]]
) -> tuple[MessageHandler, AgentMetrics]:
    metrics = AgentMetrics()
    h = MessageHandler(
        prefix="binwatch/v1",
        site="s1",
        cameras=["cam0"],
        frames_per_event=3,
        manifests=ManifestStore(use_mqtt=True),
        start_presentation=started.append,
        on_command=lambda topic, name, payload: commands.append((topic, name, payload)),
        refuse=Refusals(metrics),
    )
    return h, metrics


def test_inbound_routes_bin_events_and_commands_and_counts_refusals() -> None:
    started: list[Presentation] = []
    commands: list[tuple[str, str, bytes]] = []
    h, metrics = _inbound(started, commands)
    h.handle(
        "binwatch/v1/s1/d1/bin", json.dumps({"bin_id": "b1", "camera": "cam0", "event_id": "e1"}).encode()
    )
    h.handle("binwatch/v1/s1/d1/cmd/resync", b'{"request_id": "r1"}')
    h.handle(
        "binwatch/v1/s1/d1/bin", json.dumps({"bin_id": "b2", "camera": "nope", "event_id": "e2"}).encode()
    )
    h.handle("binwatch/v1/s1/d1/bin", b"x" * (64 * 1024 + 1))
    h.handle("binwatch/v1/s1/d1/bin", b"{not json")
    assert [(p.bin_id, p.needed, p.kind) for p in started] == [("b1", 3, "event")]
    assert [(name, payload) for _t, name, payload in commands] == [("resync", b'{"request_id": "r1"}')]
    assert dict(metrics.invalid_counts) == {"bin:unknown-camera": 1, "bin:oversized": 1, "bin:invalid": 1}


def test_commands_answer_through_the_replier(tiny_bundle: Path, tmp_path: Path) -> None:
    sink = FakeSink()
    started: list[Presentation] = []
    published: list[bool] = []
    model_state = FakeModelState()
    metrics = AgentMetrics()
    cmds = Commands(
        store=_store(tiny_bundle, tmp_path),
        bundle=None,
        cameras=["cam0"],
        frames_per_event=2,
        start_presentation=started.append,
        publish_status=lambda: published.append(True),
        model_state=model_state,  # type: ignore[arg-type]
        replies=CommandReplier(sink),
        refuse=Refusals(metrics),
    )
    topic = "binwatch/v1/s1/d1/cmd/"
    cmds(topic + "resync", "resync", b'{"request_id": "r1"}')
    cmds(topic + "capture", "capture", b'{"request_id": "r2", "args": {"frames": 99}}')
    cmds(topic + "capture", "capture", b'{"request_id": "r3", "args": {"bin_id": "b7", "expected_qty": 2}}')
    cmds(topic + "reload", "reload", b'{"request_id": "r4"}')  # no bundle given, none configured
    cmds(topic + "explode", "explode", b'{"request_id": "r5"}')
    assert published == [True] and model_state.republished == 1
    assert [(p.bin_id, p.event_qty, p.request_id, p.needed) for p in started] == [("b7", 2, "r3", 2)]
    answers = {r.request_id: (n, r.ok) for n, r in sink.command_results}
    assert answers == {
        "r1": ("resync", True),
        "r2": ("capture", False),
        "r4": ("reload", False),
        "r5": ("explode", False),
    }
    assert dict(metrics.invalid_counts) == {"cmd:bad-args": 2, "cmd:unknown-command": 1}


@pytest.mark.parametrize("overflow", [False, True])
def test_distribution_keys_mark_the_overflow_class(tiny_bundle: Path, tmp_path: Path, overflow: bool) -> None:
    from agent.inference.decision import distribution_by_count

    d = _decided(tiny_bundle, tmp_path, expected=1).decision
    keys = list(distribution_by_count(d, overflow))
    assert keys[:-1] == [str(c) for c in d.counts[:-1]]
    assert keys[-1] == f"{d.counts[-1]}+" if overflow else str(d.counts[-1])
    assert sum(distribution_by_count(d, overflow).values()) == pytest.approx(1.0, abs=1e-4)
    _ = ModelRef  # the contract type a Decided carries
