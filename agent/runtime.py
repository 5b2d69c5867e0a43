"""The agent runtime: wires capture, preprocessing, inference, decision and delivery.

Threads (all loops wait on the stop event with timeouts):

- one capture thread per camera (``agent.intake.capture``): read, decode, preprocess, hand over;
- ``inference``: takes the frames that are ready (batching across cameras), routes them to
  presentations, runs the backend, decides completed presentations;
- ``delivery``: snapshot, alert into the outbox (durable), verdict log, replay cursor;
- the MQTT link's publisher and dispatcher (``agent.delivery.link``), which also publishes ``stats``;
- ``housekeeping``: camera status changes (re-published retained), gauges;
- the HTTP server and the optional bundle watcher.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from agent.config import AgentConfig
from agent.delivery.deliver import Delivery
from agent.delivery.outbox import Outbox
from agent.delivery.records import ReplayCursors, VerdictLog
from agent.delivery.snapshots import SnapshotStore
from agent.delivery.state import AgentState
from agent.delivery.status import build_stats, build_status, camera_status_key
from agent.inference.backends.base import Backend
from agent.inference.decision import Decision, decide
from agent.inference.model_store import LoadedModel, ModelLoadError, ModelStore
from agent.inference.preprocess import preprocess
from agent.intake.capture import CaptureManager, FrameHub
from agent.intake.inbound import MessageHandler
from agent.intake.manifests import ManifestStore
from agent.intake.presentations import Presentation, PresentationTracker
from agent.intake.sources import Frame, FrameSource, make_source
from agent.metrics import AgentMetrics
from agent.web.endpoints import HttpEndpoints
from agent.web.server import AgentHttpServer
from contract.base import utcnow
from contract.messages import ModelRef, ModelReported
from contract.topics import Topics

log = logging.getLogger(__name__)

__all__ = ["Runtime"]

_ALERT_NS = uuid.UUID("6f1d5c2e-8a4b-4e53-9a57-1f0b3c2d7e91")


@dataclass
class Decided:
    pres: Presentation
    decision: Decision
    ref: ModelRef
    expected_source: str


class Runtime(HttpEndpoints):
    """One running agent. ``start()`` then ``run()`` (blocks) or ``stop()`` from elsewhere."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        backend_factory: Optional[Callable[[], Backend]] = None,
        source_factory: Callable[..., FrameSource] = make_source,
        max_frames: Optional[int] = None,
        exit_when_done: bool = False,
    ) -> None:
        self.cfg = cfg
        self.max_frames = max_frames
        self.exit_when_done = exit_when_done
        self.stop_event = threading.Event()
        self.metrics = AgentMetrics()
        a = cfg.agent
        self.site, self.device = a.site, a.device
        self.topics = Topics(a.site, a.device, prefix=cfg.mqtt.prefix)
        self.state_dir = Path(a.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state = AgentState(self.state_dir)
        self.outbox = Outbox(self.state_dir, max_rows=cfg.outbox.max_rows, max_bytes=cfg.outbox.max_bytes)
        self.manifests = ManifestStore(
            folder=cfg.manifest.dir,
            csv_path=cfg.manifest.csv,
            use_mqtt=cfg.manifest.mqtt,
            max_entries=cfg.manifest.max_entries,
        )
        s = cfg.snapshots
        self.snapshots: Optional[SnapshotStore] = (
            SnapshotStore(
                cfg.snapshot_dir,
                max_files=s.max_files,
                max_bytes=s.max_bytes,
                retention_days=s.retention_days,
            )
            if s.enabled
            else None
        )
        self.store = ModelStore(
            backend_factory or self._default_backend,
            models_dir=self.state_dir / "models",
            verify=cfg.model.verify,
            warmup=cfg.model.warmup,
            mismatch_threshold=cfg.decision.mismatch_threshold,
            match_threshold=cfg.decision.match_threshold,
            on_state=self._on_model_state,
        )
        self.cameras = {c.name: c for c in cfg.cameras}
        self.triggers = {c.name: c.resolved_trigger for c in cfg.cameras}
        self.cursors = ReplayCursors(self.state_dir / "replay")
        self.run_ids: dict[str, str] = {}
        positions: dict[str, int] = {}
        for c in cfg.cameras:
            if c.resolved_kind == "replay":
                run_id, start = self.cursors.begin(c.name, str(Path(str(c.source)).resolve()), c.resume)
                self.run_ids[c.name], positions[c.name] = run_id, start
        self.hub = FrameHub()
        self.capture = CaptureManager(
            cfg.cameras,
            self.hub,
            self.stop_event,
            source_factory=source_factory,
            prepare=self._prepare,
            positions=positions,
            batch=cfg.model.batch,
        )
        self.tracker = PresentationTracker()
        self.handler = MessageHandler(self)
        subs = [(self.topics.bin, 1), (self.topics.cmd_wildcard, 1)]
        if cfg.manifest.mqtt:
            subs.append((self.topics.manifest_wildcard, 1))
        from agent.delivery.link import MqttLink

        self.link = MqttLink(
            cfg.mqtt,
            self.topics,
            self.outbox,
            self.state,
            status_provider=self._status,
            on_message=self.handler.handle,
            subscriptions=subs,
            stats_provider=self._stats,
        )
        self.http: Optional[AgentHttpServer] = None
        self.verdict_log = (
            VerdictLog(self.state_dir / "verdicts.jsonl", a.verdict_log_max_bytes) if a.verdict_log else None
        )
        self.delivery = Delivery(self)
        self._deliver_q: queue.Queue[Optional[Decided]] = queue.Queue(maxsize=max(64, 8 * cfg.model.batch))
        self._threads: list[threading.Thread] = []
        self._taken = 0
        self._taking = True
        self._last_decision: dict[str, float] = {}
        self._cam_key: Any = None
        self._started = False
        self._stopped = False
        self.exit_code = 0
        self.final_outbox_depth = 0
        self._last_prune = time.monotonic()

    # -- construction helpers ------------------------------------------------------------------
    def _default_backend(self) -> Backend:
        from agent.inference.backends.registry import create_backend

        m = self.cfg.model
        return create_backend(
            m.backend,
            precision=m.precision,
            threads=m.threads,
            inter_threads=m.inter_threads,
            engine_cache=self.cfg.engine_cache_dir,
            batch=m.batch,
        )

    def _on_model_state(self, version: int, state: str, detail: str) -> None:
        try:
            self.link.report_model(
                ModelReported(version=version, state=state, detail=detail[:4000], ts=utcnow())
            )  # type: ignore[arg-type]
        except Exception as e:
            log.debug("model state not reported: %s", e)
        if state == "active":
            model = self.store.current
            if model is not None:
                self.metrics.model_info.clear()
                r = model.ref
                self.metrics.model_info.labels(r.name, str(r.version), r.backend, r.precision).set(1)
            self.link.publish_status()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the link and HTTP, load the model (raises ModelLoadError), then capture."""
        self._started = True
        self.link.start()
        if self.cfg.http.enabled:
            h = self.cfg.http
            self.http = AgentHttpServer(self, h.host, h.port, h.max_body_bytes)
            self.http.start()
            (self.state_dir / "http.url").write_text(self.http.url + "\n")
        if self.cfg.model.bundle is not None:
            self.store.load(self.cfg.model.bundle)
        elif self.cfg.model.backend == "fake":
            raise ModelLoadError("the fake backend needs a bundle folder with card.json (model.bundle)")
        self.metrics.model_ready.set(1)
        for target, name in ((self._infer_loop, "inference"), (self._deliver_loop, "delivery")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        hk = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        hk.start()
        self._threads.append(hk)
        if self.cfg.model.watch and self.cfg.model.bundle is not None:
            self.store.watch(self.cfg.model.bundle, self.stop_event, self.cfg.model.watch_interval_s)
        # Give the broker connection a moment, so that the first alerts go out live rather than
        # as a backlog; with the broker down the agent starts counting anyway.
        deadline = time.monotonic() + min(3.0, self.cfg.mqtt.connect_timeout_s)
        while not self.link.connected and time.monotonic() < deadline and not self.stop_event.is_set():
            time.sleep(0.02)
        if not self.link.connected:
            log.warning("broker %s not reachable yet: counting and buffering alerts", self.cfg.mqtt.broker)
        self.capture.start()
        log.info(
            "agent %s/%s running: %d camera(s), model %s, broker %s",
            self.site,
            self.device,
            len(self.cameras),
            self.store.current.describe() if self.store.current else None,
            self.cfg.mqtt.broker,
        )

    def request_stop(self) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Block until stopped (signal, ``request_stop``) or, with ``exit_when_done`` /
        ``max_frames``, until the work is done; then stop cleanly."""
        try:
            while not self.stop_event.wait(0.2):
                if self._done():
                    log.info("all frames processed; stopping")
                    break
        finally:
            self.stop()
        return self.exit_code

    def _done(self) -> bool:
        if not (self.exit_when_done or self.max_frames is not None):
            return False
        if self._taking and not (self.exit_when_done and self.capture.finished()):
            return False
        idle = self.hub.idle() if self._taking else self._inflight_zero()
        return idle and self._deliver_q.unfinished_tasks == 0 and len(self.tracker) == 0

    def _inflight_zero(self) -> bool:
        return self.hub._inflight == 0

    def stop(self) -> None:
        """Stop everything; decided verdicts are delivered to the outbox first, the outbox is kept."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_event.set()
        self.capture.join(5)
        for t in self._threads:
            if t.name == "inference":
                t.join(10)
        for pres in self.tracker.expired(-1.0):  # every active one
            self._close_presentation(pres, "the agent is stopping")
        self._deliver_q.put(None)
        for t in self._threads:
            if t.name == "delivery":
                t.join(30)
        self.cursors.flush()
        for name, st in self.capture.states.items():
            if st.state == "finished" and self.cursors.position(name) is not None:
                self.cursors.finish(name)
        self.link.stop(clean=True)
        if self.http is not None:
            self.http.stop()
        self.store.close()
        if self.verdict_log is not None:
            self.verdict_log.close()
        self.final_outbox_depth = self.outbox.depth()
        self.outbox.close()
        self.state.close()
        log.info("agent stopped (%s)", self.metrics.snapshot())

    # -- capture-side preprocessing --------------------------------------------------------------
    def _wants(self, camera: str) -> bool:
        return self.triggers.get(camera) == "per_frame" or self.tracker.has_active(camera)

    def _prepare(self, frame: Frame) -> None:
        model = self.store.current
        if model is None or not self._wants(frame.camera):
            return
        spec = model.card.input
        t0 = time.perf_counter()
        frame.tensor = preprocess(frame.image, spec)
        frame.tensor_spec = spec
        frame.preprocess_s = time.perf_counter() - t0

    # -- inference thread --------------------------------------------------------------------------
    def _route(self, frame: Frame) -> Optional[Presentation]:
        cam = self.cameras[frame.camera]
        active = self.tracker.get(frame.camera)
        if active is not None:
            if frame.ts < active.started_wall:
                self.metrics.idle(frame.camera)  # captured before the bin arrived
                return None
            return active
        if self.triggers[frame.camera] != "per_frame":
            self.metrics.idle(frame.camera)
            return None
        bin_id = frame.bin_id or cam.bin_id
        if bin_id is None:
            self.metrics.count("frames_without_bin_id")
            return None
        if cam.interval_s and frame.bin_id is None:
            last = self._last_decision.get(frame.camera, 0.0)
            if frame.mono - last < cam.interval_s:
                self.metrics.idle(frame.camera)
                return None
            self._last_decision[frame.camera] = frame.mono
        if frame.camera in self.run_ids and frame.bin_id is not None:
            event_id = f"replay-{self.run_ids[frame.camera]}-{frame.index:07d}"
            replay_index: Optional[int] = frame.index
        else:
            event_id, replay_index = f"{frame.camera}-{uuid.uuid4().hex[:16]}", None
        return Presentation(
            camera=frame.camera,
            bin_id=bin_id,
            event_id=event_id,
            kind="frame",
            needed=1,
            frame_qty=frame.expected_qty,
            replay_index=replay_index,
        )

    def _infer_loop(self) -> None:
        max_batch = self.cfg.model.batch
        while not self.stop_event.is_set():
            frames: list[Frame] = []
            try:
                self._expire()
                if not self._taking:
                    self.stop_event.wait(0.1)
                    continue
                limit = max_batch
                if self.max_frames is not None:
                    limit = min(limit, self.max_frames - self._taken)
                    if limit <= 0:
                        self._taking = False
                        log.info("--max-frames %d reached; finishing", self.max_frames)
                        continue
                frames = self.hub.take(limit, timeout=0.1)
                if not frames:
                    continue
                self._taken += len(frames)
                work = [(f, p) for f in frames if (p := self._route(f)) is not None]
                if work:
                    self._infer(work)
            except Exception:
                self.metrics.error("inference")
                log.exception("inference failed for a batch; continuing")
            finally:
                if frames:
                    self.hub.ack(len(frames))

    def _infer(self, work: list[tuple[Frame, Presentation]]) -> None:
        with self.store.use() as model:
            spec = model.card.input
            tensors = []
            for f, _ in work:
                if f.tensor is None or (f.tensor_spec is not spec and f.tensor_spec != spec):
                    t0 = time.perf_counter()
                    f.tensor = preprocess(f.image, spec)
                    f.tensor_spec = spec
                    f.preprocess_s = time.perf_counter() - t0
                tensors.append(f.tensor)
            x = np.stack(tensors)
            t0 = time.perf_counter()
            mb = max(1, model.backend.max_batch)
            logits = np.concatenate([model.backend.infer(x[i : i + mb]) for i in range(0, len(x), mb)])
            infer_s = time.perf_counter() - t0
            done: list[Presentation] = []
            for (f, pres), lg in zip(work, logits, strict=False):
                if f.decode_s:
                    self.metrics.observe("decode", f.decode_s)
                self.metrics.observe("preprocess", f.preprocess_s)
                self.metrics.observe("infer", infer_s)
                self.metrics.frame_done(f.camera)
                f.tensor = None  # free memory early
                if pres.complete or pres.decided:  # more frames in this batch than it needs
                    continue
                pres.add(f, lg)
                if pres.complete and pres not in done:
                    done.append(pres)
            for pres in done:
                self._decide(pres, model)

    def _decide(self, pres: Presentation, model: LoadedModel, *, final: bool = False) -> None:
        """Decide ``pres`` (once). With ``uncertain_policy: more_frames`` an uncertain event
        presentation that is still active asks for more frames instead (unless ``final``)."""
        t0 = time.perf_counter()
        expected, source = self.manifests.lookup(
            pres.bin_id, event_qty=pres.event_qty, frame_qty=pres.frame_qty
        )
        decision = decide(np.stack(pres.logits), model.card.output, expected, model.thresholds)
        if (
            not final
            and decision.verdict == "uncertain"
            and pres.kind != "frame"
            and self.cfg.decision.uncertain_policy == "more_frames"
            and pres.count < self.cfg.decision.max_frames
            and self.tracker.get(pres.camera) is pres
        ):
            pres.needed = min(self.cfg.decision.max_frames, pres.count + self.cfg.decision.frames_per_event)
            log.debug(
                "bin %s uncertain after %d frame(s); capturing up to %d", pres.bin_id, pres.count, pres.needed
            )
            return
        if not pres.claim():
            return
        self.tracker.finish(pres)
        self.metrics.observe("decide", time.perf_counter() - t0)
        self._put(Decided(pres, decision, model.ref, source))

    def _put(self, item: Decided) -> None:
        while True:
            try:
                self._deliver_q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stopped and not any(t.is_alive() for t in self._threads if t.name == "delivery"):
                    log.error("delivery stopped; verdict for bin %s not delivered", item.pres.bin_id)
                    return

    def _expire(self) -> None:
        timeout = self.cfg.decision.event_timeout_s
        for pres in self.tracker.expired(timeout):
            self._close_presentation(pres, f"no frame from camera {pres.camera} within {timeout:g}s")

    def _close_presentation(self, pres: Presentation, reason: str) -> None:
        """End a presentation early: decide on the frames it has, or report it without a verdict."""
        model = self.store.current
        if pres.count and model is not None:
            log.info(
                "bin %s: deciding on %d of %d frame(s) (%s)", pres.bin_id, pres.count, pres.needed, reason
            )
            self._decide(pres, model, final=True)
        elif pres.claim():
            self.end_without_frames(pres, reason)

    def end_without_frames(self, pres: Presentation, reason: str) -> None:
        self.metrics.verdict("failed")
        log.warning("bin %s (event %s): no verdict: %s", pres.bin_id, pres.event_id, reason)
        if self.verdict_log is not None:
            self.verdict_log.write(
                {
                    "ts": time.time(),
                    "verdict": "failed",
                    "camera": pres.camera,
                    "bin_id": pres.bin_id,
                    "event_id": pres.event_id,
                    "reason": reason,
                }
            )
        if pres.request_id:
            self.handler.command_done("capture", pres.request_id, False, reason)

    def start_presentation(self, pres: Presentation) -> None:
        old = self.tracker.start(pres)
        if old is not None:
            self._close_presentation(old, f"superseded by event {pres.event_id}")

    # -- delivery thread ---------------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        self.delivery.loop()

    # -- status, stats, HTTP -----------------------------------------------------------------------
    def _status(self, state: str):
        return build_status(self, state)

    def _stats(self):
        return build_stats(self)

    def _housekeeping(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                key = camera_status_key(self)
                if key != self._cam_key:
                    if self._cam_key is not None:
                        self.link.publish_status()
                    self._cam_key = key
                m = self.metrics
                for name, st in self.capture.states.items():
                    m.camera_up.labels(name).set(1 if st.state in ("live", "finished") else 0)
                    m.camera_dropped.labels(name).set(st.dropped)
                    m.camera_decode_errors.labels(name).set(st.decode_errors)
                    m.camera_reconnects.labels(name).set(st.reconnects + st.open_failures)
                m.outbox_depth.set(self.outbox.depth())
                m.outbox_dropped.set(self.outbox.dropped())
                m.mqtt_connected.set(1 if self.link.connected else 0)
                m.model_ready.set(1 if self.store.ready else 0)
                self.cursors.flush()
                if self.snapshots is not None and time.monotonic() - self._last_prune > 600:
                    self._last_prune = time.monotonic()
                    self.snapshots.prune()
            except Exception:
                log.exception("housekeeping failed")
