"""Capture threads: one per camera, latest frame wins, a watchdog reopens lost cameras.

- Live cameras put frames in a one-frame slot: a frame not yet taken by the inference thread is
  replaced by the newer one and counted as dropped.
- Finite sources (replay folders, video files) block instead, so every frame is processed.
- A camera that cannot be opened or stops delivering is closed and reopened with exponential
  backoff (``backoff_min_s`` doubling to ``backoff_max_s``, with jitter); a camera stuck in a read
  for longer than ``stale_after_s`` is marked stalled and, if still stuck, its thread is replaced.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from agent.intake.hub import CameraState, FrameHub
from agent.intake.sources import EndOfStream, Frame, FrameSource, SourceLost, make_source

log = logging.getLogger(__name__)

__all__ = ["CameraWorker", "CaptureManager"]


class CameraWorker(threading.Thread):
    """Reads one camera into the hub until stopped, finished, or replaced by the watchdog."""

    def __init__(
        self,
        cam: Any,  # agent.config.CameraConfig
        hub: FrameHub,
        stop: threading.Event,
        state: CameraState,
        *,
        source_factory: Callable[..., FrameSource] = make_source,
        prepare: Optional[Callable[[Frame], None]] = None,
        start_position: int = 0,
        on_finished: Optional[Callable[[str], None]] = None,
    ) -> None:
        super().__init__(name=f"capture-{cam.name}", daemon=True)
        self.cam = cam
        self.hub = hub
        self.stop_event = stop
        self.state = state
        self.source_factory = source_factory
        self.prepare = prepare
        self.position = start_position
        self.on_finished = on_finished
        self.abandoned = False
        self.in_read_since: Optional[float] = None
        self._src: Optional[FrameSource] = None
        self._rng = random.Random()

    # -- helpers ------------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        lo, hi = float(self.cam.backoff_min_s), float(self.cam.backoff_max_s)
        delay = min(hi, lo * (2 ** max(0, attempt - 1)))
        return delay * (0.8 + 0.4 * self._rng.random())

    def _sync_counters(self) -> None:
        if self._src is not None:
            self.state.decode_errors = self._src.decode_errors
            self.state.skipped = dict(self._src.skipped)

    def _close(self) -> None:
        if self._src is not None:
            self._sync_counters()
            try:
                self._src.close()
            except Exception as e:  # a broken driver must not kill the thread
                log.debug("camera %s: close failed: %s", self.cam.name, e)
            self._src = None

    def _current(self) -> bool:
        return not self.abandoned

    # -- loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        attempt = 0
        rate = self.cam.replay_rate
        interval = 1.0 / rate if rate else 0.0
        next_due = time.monotonic()
        try:
            while not self.stop_event.is_set() and not self.abandoned:
                if self._src is None:
                    attempt = self._open(attempt)
                    if self._src is None:
                        continue
                if interval:
                    now = time.monotonic()
                    if next_due > now and self.stop_event.wait(next_due - now):
                        break
                    next_due = max(next_due + interval, time.monotonic() - interval)
                step = self._read_one()
                if step == "finished":
                    return
                if step == "reopen":
                    attempt = 1
                    continue
                if step == "abandoned":
                    break
        finally:
            self._close()
            if self.state.state not in ("finished",) and not self.abandoned:
                self.state.state = "stopped"

    def _open(self, attempt: int) -> int:
        """Open the source; on failure wait the backoff. Returns the new attempt count."""
        try:
            src = self.source_factory(self.cam, start=self.position)
            self.state.source = src.describe()
            src.open()
        except SourceLost as e:
            attempt += 1
            self.state.open_failures += 1
            self.state.state = "reconnecting"
            self.state.last_error = str(e)
            delay = self._backoff(attempt)
            log.warning("%s; retrying in %.1fs (attempt %d)", e, delay, attempt)
            self.stop_event.wait(delay)
            return attempt
        # counters of a reopened source continue from the previous ones
        src.decode_errors = self.state.decode_errors
        src.skipped = dict(self.state.skipped)
        self._src = src
        if attempt:
            log.info("camera %s: back after %d attempt(s)", self.cam.name, attempt)
        self.state.state = "live"
        self.state.last_error = None
        return 0

    def _lost(self, error: str) -> None:
        self.state.reconnects += 1
        self.state.state = "reconnecting"
        self.state.last_error = error

    def _read_one(self) -> str:
        """Read one frame into the hub: ``"ok"``, ``"reopen"`` (source lost, closed, waited), ``"retry"``
        (the read failed unexpectedly; closed, waited),
        ``"finished"`` (end of a finite source) or ``"abandoned"`` (replaced by the watchdog)."""
        assert self._src is not None
        self.in_read_since = time.monotonic()
        try:
            frame = self._src.read()
        except SourceLost as e:
            self.in_read_since = None
            self._lost(str(e))
            log.warning("%s; reopening", e)
            self.position = self._src.position
            self._close()
            self.stop_event.wait(self._backoff(1))
            return "reopen"
        except EndOfStream as e:
            self.in_read_since = None
            self._sync_counters()
            if self.cam.loop:
                log.info("%s; looping", e)
                self.position = 0
                self._close()
                return "ok"
            log.info("%s", e)
            self.state.state = "finished"
            if self.on_finished is not None:
                self.on_finished(self.cam.name)
            return "finished"
        except Exception as e:
            self.in_read_since = None
            self._lost(f"{type(e).__name__}: {e}")
            log.exception("camera %s: read failed; reopening", self.cam.name)
            self._close()
            self.stop_event.wait(self._backoff(1))
            return "retry"
        self.in_read_since = None
        if self.abandoned:
            return "abandoned"
        self._deliver(frame)
        return "ok"

    def _deliver(self, frame: Frame) -> None:
        assert self._src is not None
        self.position = self._src.position
        self._sync_counters()
        if self.state.state == "stalled":
            self.state.state = "live"
        self.state.record_frame(frame.ts)
        if self.prepare is not None:
            try:
                self.prepare(frame)
            except Exception as e:
                log.debug("camera %s: preprocessing in capture failed: %s", self.cam.name, e)
                frame.tensor = None
        self.hub.put(frame, self.stop_event, self._current)


class CaptureManager:
    """Starts a worker per camera and runs the watchdog for stalled reads."""

    def __init__(
        self,
        cameras: list[Any],
        hub: FrameHub,
        stop: threading.Event,
        *,
        source_factory: Callable[..., FrameSource] = make_source,
        prepare: Optional[Callable[[Frame], None]] = None,
        positions: Optional[dict[str, int]] = None,
        on_finished: Optional[Callable[[str], None]] = None,
        batch: int = 1,
    ) -> None:
        self.cameras = {c.name: c for c in cameras}
        self.hub = hub
        self.stop_event = stop
        self.source_factory = source_factory
        self.prepare = prepare
        self.positions = positions or {}
        self.on_finished = on_finished
        self.states: dict[str, CameraState] = {c.name: CameraState(name=c.name) for c in cameras}
        self.workers: dict[str, CameraWorker] = {}
        self._watchdog: Optional[threading.Thread] = None
        for c in cameras:
            finite = self._is_finite(c)
            self.hub.add_camera(
                self.states[c.name], capacity=2 * max(1, batch) if finite else 1, drop=not finite
            )

    @staticmethod
    def _is_finite(cam: Any) -> bool:
        from agent.intake.sources import classify_source

        if cam.drop_frames is not None:
            return not cam.drop_frames
        kind = cam.kind if cam.kind != "auto" else classify_source(cam.source)
        return kind in ("replay", "file")

    def _spawn(self, name: str, position: int) -> CameraWorker:
        w = CameraWorker(
            self.cameras[name],
            self.hub,
            self.stop_event,
            self.states[name],
            source_factory=self.source_factory,
            prepare=self.prepare,
            start_position=position,
            on_finished=self.on_finished,
        )
        self.workers[name] = w
        w.start()
        return w

    def start(self) -> None:
        for name in self.cameras:
            self._spawn(name, self.positions.get(name, 0))
        self._watchdog = threading.Thread(target=self._watch, name="capture-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self.stop_event.wait(0.5):
            now = time.monotonic()
            for name, w in list(self.workers.items()):
                cam = self.cameras[name]
                since = w.in_read_since
                if since is None or not cam.stale_after_s:
                    continue
                stuck = now - since
                st = self.states[name]
                if stuck > cam.stale_after_s and st.state == "live":
                    st.state = "stalled"
                    st.last_error = f"no frame for {stuck:.1f}s"
                    log.warning("camera %s: stalled (no frame for %.1fs)", name, stuck)
                if stuck > 2 * cam.stale_after_s and not w.abandoned:
                    # A read that never returns (driver hang): leave that thread behind and
                    # start a fresh one; the old one exits without delivering when it wakes.
                    w.abandoned = True
                    st.restarts += 1
                    log.error("camera %s: read stuck for %.1fs; restarting its capture thread", name, stuck)
                    self._spawn(name, w.position)

    def finished(self) -> bool:
        """Every finite source (replay folder, video file) is finished (live cameras never are)."""
        finite = [n for n, c in self.cameras.items() if self._is_finite(c)]
        return bool(finite) and all(self.states[n].state == "finished" for n in finite)

    def live_count(self) -> int:
        return sum(1 for s in self.states.values() if s.state == "live")

    def join(self, timeout: float = 5.0) -> None:
        self.hub.wake()
        deadline = time.monotonic() + timeout
        for w in list(self.workers.values()):
            w.join(max(0.0, deadline - time.monotonic()))
        if self._watchdog is not None:
            self._watchdog.join(max(0.0, deadline - time.monotonic()))
