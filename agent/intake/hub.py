"""The hand-over between capture and inference: per-camera frame slots (:class:`FrameHub`) and what
the agent knows about each camera (:class:`CameraState`, published in ``status`` and ``stats``).

Live cameras have a one-frame slot (latest frame wins; a frame replaced before it was taken counts
as dropped); finite sources (replay folders, video files) have a small slot and block instead, so
every frame is processed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from agent.intake.sources import Frame

__all__ = ["CameraState", "FrameHub"]


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

    def record_frame(self, ts: float) -> None:
        """A frame was read: count it and remember when (for ``fps``)."""
        self.frames += 1
        self.last_frame_ts = ts
        self._recent.append(time.monotonic())

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

    @property
    def inflight(self) -> int:
        """Frames taken but not yet acknowledged by the consumer."""
        with self._cond:
            return self._inflight

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
