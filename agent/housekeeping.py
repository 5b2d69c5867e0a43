"""The agent's ``housekeeping`` thread: every half second it pets the systemd watchdog while the
agent is healthy, re-publishes ``status`` when a camera changes state, refreshes the gauges
``/metrics`` shows, saves replay positions, and prunes old snapshots every ten minutes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from agent.delivery.outbox import Outbox
    from agent.delivery.records import ReplayCursors
    from agent.delivery.snapshots import SnapshotStore
    from agent.delivery.status import StatusReporter
    from agent.inference.model_store import ModelStore
    from agent.intake.capture import CaptureManager
    from agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

__all__ = ["Housekeeper"]

_PRUNE_EVERY_S = 600.0


class Housekeeper:
    def __init__(
        self,
        *,
        capture: CaptureManager,
        status: StatusReporter,
        publish_status: Callable[[], None],
        connected: Callable[[], bool],
        store: ModelStore,
        outbox: Outbox,
        metrics: AgentMetrics,
        cursors: ReplayCursors,
        snapshots: Optional[SnapshotStore],
        stop_event: threading.Event,
        healthy: Callable[[], bool] = lambda: True,
        watchdog: Callable[[], object] = lambda: None,
    ) -> None:
        self.capture = capture
        self.status = status
        self.publish_status = publish_status
        self.connected = connected
        self.store = store
        self.outbox = outbox
        self.metrics = metrics
        self.cursors = cursors
        self.snapshots = snapshots
        self.stop_event = stop_event
        self.healthy = healthy
        self.watchdog = watchdog
        self._cam_key: Any = None
        self._last_prune = time.monotonic()

    def loop(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                self.tick()
            except Exception:
                log.exception("housekeeping failed")

    def tick(self) -> None:
        if self.healthy():
            self.watchdog()  # systemd restarts the agent when this stops (WatchdogSec)
        key = self.status.camera_key()
        if key != self._cam_key:
            if self._cam_key is not None:
                self.publish_status()
            self._cam_key = key
        m = self.metrics
        for name, st in self.capture.states.items():
            m.camera_up.labels(name).set(1 if st.state in ("live", "finished") else 0)
            m.camera_dropped.labels(name).set(st.dropped)
            m.camera_decode_errors.labels(name).set(st.decode_errors)
            m.camera_reconnects.labels(name).set(st.reconnects + st.open_failures)
        m.outbox_depth.set(self.outbox.depth())
        m.outbox_dropped.set(self.outbox.dropped())
        m.outbox_refused.set(self.outbox.refused()[0])
        m.snapshots_waiting.set(self.outbox.snapshot_depth())
        m.snapshots_dropped.set(self.outbox.snapshots_dropped()[0])
        m.mqtt_connected.set(1 if self.connected() else 0)
        m.model_ready.set(1 if self.store.ready else 0)
        self.cursors.flush()
        if self.snapshots is not None and time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self.snapshots.prune()
