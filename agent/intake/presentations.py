"""Presentations: the frames that belong to one bin in front of one camera.

A presentation starts with a ``bin`` event (or ``cmd/capture``) and collects the next
``frames`` frames of its camera (captured after the event), or it is a single replay frame that
carries its own bin id. When complete, its logits are fused and decided.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from agent.intake.sources import Frame

__all__ = ["Presentation", "PresentationTracker"]

Kind = Literal["event", "frame", "capture"]


@dataclass
class Presentation:
    camera: str
    bin_id: str
    event_id: str
    kind: Kind
    needed: int
    event_qty: Optional[int] = None
    frame_qty: Optional[int] = None  # replay frames: from the frame's metadata
    started_wall: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    logits: list[np.ndarray] = field(default_factory=list)
    last_frame: Optional[Frame] = None
    first_mono: Optional[float] = None  # capture time of its first frame (latency)
    replay_index: Optional[int] = None
    request_id: Optional[str] = None  # cmd/capture
    decided: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def claim(self) -> bool:
        """True for the one caller that gets to decide this presentation (exactly once)."""
        with self._lock:
            if self.decided:
                return False
            self.decided = True
            return True

    @property
    def count(self) -> int:
        return len(self.logits)

    @property
    def complete(self) -> bool:
        return len(self.logits) >= self.needed

    def add(self, frame: Frame, logits: np.ndarray) -> None:
        self.logits.append(np.asarray(logits, dtype=np.float32))
        if self.first_mono is None:
            self.first_mono = frame.mono
        self.last_frame = frame


class PresentationTracker:
    """The active (event) presentation per camera. A new event on a camera ends the previous
    one: it is decided with the frames it has, or reported as superseded without any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Presentation] = {}

    def start(self, pres: Presentation) -> Optional[Presentation]:
        """Make ``pres`` the camera's active presentation; returns the one it replaced."""
        with self._lock:
            old = self._active.get(pres.camera)
            self._active[pres.camera] = pres
            return old

    def get(self, camera: str) -> Optional[Presentation]:
        with self._lock:
            return self._active.get(camera)

    def has_active(self, camera: str) -> bool:
        with self._lock:
            return camera in self._active

    def finish(self, pres: Presentation) -> None:
        with self._lock:
            if self._active.get(pres.camera) is pres:
                del self._active[pres.camera]

    def expired(self, timeout_s: float) -> list[Presentation]:
        now = time.monotonic()
        with self._lock:
            out = [p for p in self._active.values() if now - p.started_mono > timeout_s]
            for p in out:
                del self._active[p.camera]
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._active)
