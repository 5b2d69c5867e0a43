"""The inference stage (the agent's ``inference`` thread): frames from the hub -> presentations ->
batched inference -> decisions, handed to delivery.

- :meth:`InferencePipeline.prepare` runs on each capture thread: it preprocesses a frame early when
  the camera is wanted (per-frame trigger, or an active bin event), so the inference thread only
  stacks tensors.
- :meth:`InferencePipeline.loop` takes the frames that are ready (batching across cameras), routes
  each to its presentation (a bin event's, or a single replay frame that carries its own bin id),
  runs the backend, and decides each presentation once it has its frames.
- A presentation that runs out of time, is superseded by a new event, or is still open when the
  agent stops is decided on the frames it has, or reported to delivery as failed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Protocol

import numpy as np

from agent.inference.decision import Decision, decide
from agent.inference.model_store import LoadedModel, ModelStore
from agent.inference.preprocess import preprocess
from agent.intake.presentations import Presentation, PresentationTracker
from agent.intake.sources import Frame
from contract.messages import ModelRef

if TYPE_CHECKING:
    from agent.intake.hub import FrameHub
    from agent.intake.manifests import ManifestStore
    from agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

__all__ = ["Decided", "InferencePipeline", "VerdictSink"]


@dataclass
class Decided:
    """A presentation with its verdict, ready to deliver."""

    pres: Presentation
    decision: Decision
    ref: ModelRef
    expected_source: str
    overflow: bool = False  # the model's last count class means "this many or more"


class VerdictSink(Protocol):
    """Where decided presentations go (:class:`agent.delivery.deliver.Delivery`)."""

    def deliver(self, item: Decided) -> None: ...

    def fail(self, pres: Presentation, reason: str) -> None: ...


class InferencePipeline:
    """See the module docstring. ``cameras`` are the camera config sections, ``decision`` the
    ``decision:`` section (thresholds come from the model store)."""

    def __init__(
        self,
        *,
        cameras: Sequence[Any],
        decision: Any,
        batch: int,
        store: ModelStore,
        hub: FrameHub,
        manifests: ManifestStore,
        metrics: AgentMetrics,
        sink: VerdictSink,
        stop_event: threading.Event,
        run_ids: Optional[Mapping[str, str]] = None,
        max_frames: Optional[int] = None,
    ) -> None:
        self.cameras = {c.name: c for c in cameras}
        self.triggers = {c.name: c.resolved_trigger for c in cameras}
        self.decision = decision
        self.batch = batch
        self.store = store
        self.hub = hub
        self.manifests = manifests
        self.metrics = metrics
        self.sink = sink
        self.stop_event = stop_event
        self.run_ids = dict(run_ids or {})
        self.max_frames = max_frames
        self.tracker = PresentationTracker()
        self.taking = True  # False once --max-frames frames were taken
        self._taken = 0
        self._last_decision: dict[str, float] = {}

    # -- capture threads ---------------------------------------------------------------------------
    def prepare(self, frame: Frame) -> None:
        """Preprocess ``frame`` on its capture thread when the camera is wanted now."""
        model = self.store.current
        if model is None or not self._wants(frame.camera):
            return
        spec = model.card.input
        t0 = time.perf_counter()
        frame.tensor = preprocess(frame.image, spec)
        frame.tensor_spec = spec
        frame.preprocess_s = time.perf_counter() - t0

    def _wants(self, camera: str) -> bool:
        return self.triggers.get(camera) == "per_frame" or self.tracker.has_active(camera)

    # -- bin events (MQTT dispatcher, commands) ----------------------------------------------------
    def start_presentation(self, pres: Presentation) -> None:
        """Make ``pres`` its camera's active presentation; the one it replaces is closed."""
        old = self.tracker.start(pres)
        if old is not None:
            self.close_presentation(old, f"superseded by event {pres.event_id}")

    def close_all(self, reason: str) -> None:
        """Close every active presentation (the agent is stopping)."""
        for pres in self.tracker.expired(-1.0):
            self.close_presentation(pres, reason)

    def drained(self) -> bool:
        """No frame waiting or being inferred and no presentation open."""
        idle = self.hub.idle() if self.taking else self.hub.inflight == 0
        return idle and len(self.tracker) == 0

    # -- the inference thread ----------------------------------------------------------------------
    def loop(self) -> None:
        """Run until the stop event: take ready frames, infer, decide."""
        while not self.stop_event.is_set():
            frames: list[Frame] = []
            try:
                self._expire()
                if not self.taking:
                    self.stop_event.wait(0.1)
                    continue
                limit = self._limit()
                if limit <= 0:
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

    def _limit(self) -> int:
        limit = self.batch
        if self.max_frames is not None:
            limit = min(limit, self.max_frames - self._taken)
            if limit <= 0:
                self.taking = False
                log.info("--max-frames %d reached; finishing", self.max_frames)
        return limit

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
        cfg = self.decision
        if (
            not final
            and decision.verdict == "uncertain"
            and pres.kind != "frame"
            and cfg.uncertain_policy == "more_frames"
            and pres.count < cfg.max_frames
            and self.tracker.get(pres.camera) is pres
        ):
            pres.needed = min(cfg.max_frames, pres.count + cfg.frames_per_event)
            log.debug(
                "bin %s uncertain after %d frame(s); capturing up to %d", pres.bin_id, pres.count, pres.needed
            )
            return
        if not pres.claim():
            return
        self.tracker.finish(pres)
        self.metrics.observe("decide", time.perf_counter() - t0)
        self.sink.deliver(Decided(pres, decision, model.ref, source, overflow=model.card.output.overflow))

    def _expire(self) -> None:
        timeout = self.decision.event_timeout_s
        for pres in self.tracker.expired(timeout):
            self.close_presentation(pres, f"no frame from camera {pres.camera} within {timeout:g}s")

    def close_presentation(self, pres: Presentation, reason: str) -> None:
        """End a presentation early: decide on the frames it has, or report it without a verdict."""
        model = self.store.current
        if pres.count and model is not None:
            log.info(
                "bin %s: deciding on %d of %d frame(s) (%s)", pres.bin_id, pres.count, pres.needed, reason
            )
            self._decide(pres, model, final=True)
        elif pres.claim():
            self.sink.fail(pres, reason)
