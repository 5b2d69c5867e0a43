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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from agent.intake.sources import EndOfStream, Frame, FrameSource, SourceLost, make_source

log = logging.getLogger(__name__)

__all__ = ["CameraState", "CameraWorker", "CaptureManager", "FrameHub"]


@dataclass
class CameraState:
    """What the agent knows about one camera (published in ``status`` and ``stats``)."""

    name: str
    source: str = ""
    state: str = "starting"  # starting | live | reconnecting | stalled | finished | stopped
    frames: int = 0
    dropped: int = 0
    decode_errors: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    open_failures: int = 0
    restarts: int = 0
    last_error: Optional[str] = None
    last_frame_ts: Optional[float] = None
    started_mono: float = field(default_factory=time.monotonic)
    _recent: deque = field(default_factory=lambda: deque(maxlen=64), repr=False)

    def fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0

    @property
    def live(self) -> bool:
        return self.state == "live"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "state": self.state,
            "frames": self.frames,
            "dropped": self.dropped,
            "decode_errors": self.decode_errors,
            "skipped": dict(self.skipped),
            "reconnects": self.reconnects,
            "open_failures": self.open_failures,
            "restarts": self.restarts,
            "fps": round(self.fps(), 2),
            "last_error": self.last_error,
            "last_frame_ts": self.last_frame_ts,
        }


class FrameHub:
    """Per-camera slots behind one condition variable, so the inference thread can wait for
    "any frame from any camera" and batch the frames that are ready together."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[str, deque[Frame]] = {}
        self._capacity: dict[str, int] = {}
        self._drop: dict[str, bool] = {}
        self._states: dict[str, CameraState] = {}
        self._rr = 0
        self._inflight = 0  # taken but not yet acknowledged by the consumer

    def add_camera(self, state: CameraState, *, capacity: int = 1, drop: bool = True) -> None:
        with self._cond:
            self._slots.setdefault(state.name, deque())
            self._capacity[state.name] = max(1, capacity)
            self._drop[state.name] = drop
            self._states[state.name] = state

    def put(self, frame: Frame, stop: threading.Event, is_current: Callable[[], bool] = lambda: True) -> bool:
        """Offer a frame; live slots drop the oldest, finite ones wait for room (or ``stop``)."""
        name = frame.camera
        with self._cond:
            slot = self._slots[name]
            if self._drop[name]:
                while len(slot) >= self._capacity[name]:
                    slot.popleft()
                    self._states[name].dropped += 1
            else:
                while len(slot) >= self._capacity[name]:
                    if stop.is_set() or not is_current():
                        return False
                    self._cond.wait(0.2)
            slot.append(frame)
            self._cond.notify_all()
            return True

    def take(self, max_n: int, timeout: float) -> list[Frame]:
        """Up to ``max_n`` frames, at most one per camera per round, round-robin across cameras;
        waits up to ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(self._slots.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            names = list(self._slots)
            out: list[Frame] = []
            while len(out) < max_n and any(self._slots[n] for n in names):
                for i in range(len(names)):
                    n = names[(self._rr + i) % len(names)]
                    if self._slots[n] and len(out) < max_n:
                        out.append(self._slots[n].popleft())
                self._rr = (self._rr + 1) % max(1, len(names))
            self._inflight += len(out)
            self._cond.notify_all()
            return out

    def ack(self, n: int) -> None:
        """The consumer is done with ``n`` frames it took (processed or discarded)."""
        with self._cond:
            self._inflight = max(0, self._inflight - n)

    def pending(self) -> int:
        with self._cond:
            return sum(len(s) for s in self._slots.values())

    def idle(self) -> bool:
        """No frame waiting and none taken but unacknowledged."""
        with self._cond:
            return self._inflight == 0 and not any(self._slots.values())

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


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
                        continue
                    # counters of a reopened source continue from the previous ones
                    src.decode_errors = self.state.decode_errors
                    src.skipped = dict(self.state.skipped)
                    self._src = src
                    if attempt:
                        log.info("camera %s: back after %d attempt(s)", self.cam.name, attempt)
                    attempt = 0
                    self.state.state = "live"
                    self.state.last_error = None
                if interval:
                    now = time.monotonic()
                    if next_due > now and self.stop_event.wait(next_due - now):
                        break
                    next_due = max(next_due + interval, time.monotonic() - interval)
                self.in_read_since = time.monotonic()
                try:
                    frame = self._src.read()
                except SourceLost as e:
                    self.in_read_since = None
                    self.state.reconnects += 1
                    self.state.state = "reconnecting"
                    self.state.last_error = str(e)
                    log.warning("%s; reopening", e)
                    self.position = self._src.position
                    self._close()
                    attempt = 1
                    self.stop_event.wait(self._backoff(attempt))
                    continue
                except EndOfStream as e:
                    self.in_read_since = None
                    self._sync_counters()
                    if self.cam.loop:
                        log.info("%s; looping", e)
                        self.position = 0
                        self._close()
                        continue
                    log.info("%s", e)
                    self.state.state = "finished"
                    if self.on_finished is not None:
                        self.on_finished(self.cam.name)
                    return
                except Exception as e:
                    self.in_read_since = None
                    self.state.reconnects += 1
                    self.state.state = "reconnecting"
                    self.state.last_error = f"{type(e).__name__}: {e}"
                    log.exception("camera %s: read failed; reopening", self.cam.name)
                    self._close()
                    self.stop_event.wait(self._backoff(1))
                    continue
                self.in_read_since = None
                if self.abandoned:
                    break
                self.position = self._src.position
                self._sync_counters()
                if self.state.state == "stalled":
                    self.state.state = "live"
                self.state.frames += 1
                self.state.last_frame_ts = frame.ts
                self.state._recent.append(time.monotonic())
                if self.prepare is not None:
                    try:
                        self.prepare(frame)
                    except Exception as e:
                        log.debug("camera %s: preprocessing in capture failed: %s", self.cam.name, e)
                        frame.tensor = None
                self.hub.put(frame, self.stop_event, self._current)
        finally:
            self._close()
            if self.state.state not in ("finished",) and not self.abandoned:
                self.state.state = "stopped"


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
