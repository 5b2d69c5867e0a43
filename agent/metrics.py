"""The agent's counters and latency windows, exposed to Prometheus (``/metrics``) and summarised
in the ``stats`` MQTT message.

One :class:`AgentMetrics` per runtime with its own ``CollectorRegistry`` (so several agents can live
in one process, as in tests).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Optional

import numpy as np

__all__ = ["STAGES", "AgentMetrics", "LatencyWindow"]

# pipeline stages measured per frame (seconds): decode, preprocess, infer (per batch / frame),
# decide, deliver (outbox write), total (capture -> outbox or verdict)
STAGES = ("decode", "preprocess", "infer", "decide", "deliver", "total")


class LatencyWindow:
    """The last ``size`` samples of one stage, for p50/p99."""

    def __init__(self, size: int = 2048) -> None:
        self._d: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._d.append(seconds)

    def percentiles(self) -> Optional[tuple[float, float, int]]:
        with self._lock:
            if not self._d:
                return None
            a = np.fromiter(self._d, dtype=np.float64)
        p50, p99 = np.percentile(a, [50, 99])
        return float(p50), float(p99), int(a.size)


class AgentMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram
        from prometheus_client import Counter as PCounter

        self.started = time.time()
        self.started_mono = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = PCounter("binwatch_frames", "Frames processed (inferred)", ["camera"], registry=r)
        self.frames_idle = PCounter(
            "binwatch_frames_idle", "Frames captured while no bin was presented", ["camera"], registry=r
        )
        self.verdicts = PCounter("binwatch_verdicts", "Verdicts by kind", ["verdict"], registry=r)
        self.alerts = PCounter("binwatch_alerts_enqueued", "Mismatch alerts stored in the outbox", registry=r)
        self.invalid = PCounter(
            "binwatch_invalid_messages", "Refused incoming MQTT messages", ["topic", "reason"], registry=r
        )
        self.errors = PCounter("binwatch_errors", "Internal errors by stage", ["stage"], registry=r)
        self.stage = Histogram(
            "binwatch_stage_seconds",
            "Per-frame latency by pipeline stage",
            ["stage"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.camera_up = Gauge(
            "binwatch_camera_up", "1 when the camera delivers frames", ["camera"], registry=r
        )
        self.camera_dropped = Gauge(
            "binwatch_camera_dropped_frames", "Frames replaced before inference", ["camera"], registry=r
        )
        self.camera_decode_errors = Gauge(
            "binwatch_camera_decode_errors", "Corrupt or empty images skipped", ["camera"], registry=r
        )
        self.camera_reconnects = Gauge(
            "binwatch_camera_reconnects", "Camera reopen count", ["camera"], registry=r
        )
        self.outbox_depth = Gauge("binwatch_outbox_depth", "Alerts waiting for the broker", registry=r)
        self.outbox_dropped = Gauge("binwatch_outbox_dropped", "Alerts dropped by outbox bounds", registry=r)
        self.outbox_refused = Gauge(
            "binwatch_outbox_refused", "Outbox rows the broker refused, waiting for their retry", registry=r
        )
        self.snapshots_waiting = Gauge(
            "binwatch_snapshots_waiting", "Alert pictures in the outbox waiting for the broker", registry=r
        )
        self.snapshots_dropped = Gauge(
            "binwatch_snapshots_dropped", "Alert pictures dropped by the snapshot byte budget", registry=r
        )
        self.mqtt_connected = Gauge("binwatch_mqtt_connected", "1 while connected to the broker", registry=r)
        self.model_ready = Gauge("binwatch_model_ready", "1 when a model is loaded and warm", registry=r)
        self.model_info = Gauge(
            "binwatch_model_info",
            "The running model",
            ["name", "version", "backend", "precision"],
            registry=r,
        )
        self.uptime = Gauge("binwatch_uptime_seconds", "Seconds since start", registry=r)
        self.uptime.set_function(lambda: time.monotonic() - self.started_mono)
        self.windows = {s: LatencyWindow() for s in STAGES}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # plain mirrors for stats and tests
        self.invalid_counts: Counter[str] = Counter()
        self.verdict_counts: Counter[str] = Counter()
        self._fps_marks: deque[tuple[float, int]] = deque(maxlen=120)

    # -- recording -------------------------------------------------------------------------------
    def observe(self, stage: str, seconds: float) -> None:
        self.windows[stage].add(seconds)
        self.stage.labels(stage).observe(seconds)

    def frame_done(self, camera: str, n: int = 1) -> None:
        self.frames.labels(camera).inc(n)
        with self._lock:
            self.counts["frames"] += n

    def idle(self, camera: str) -> None:
        self.frames_idle.labels(camera).inc()
        with self._lock:
            self.counts["frames_idle"] += 1

    def verdict(self, verdict: str) -> None:
        self.verdicts.labels(verdict).inc()
        with self._lock:
            self.verdict_counts[verdict] += 1

    def alert(self) -> None:
        self.alerts.inc()
        with self._lock:
            self.counts["alerts"] += 1

    def invalid_message(self, topic_kind: str, reason: str) -> None:
        self.invalid.labels(topic_kind, reason).inc()
        with self._lock:
            self.invalid_counts[f"{topic_kind}:{reason}"] += 1

    def error(self, stage: str) -> None:
        self.errors.labels(stage).inc()
        with self._lock:
            self.counts[f"error:{stage}"] += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    # -- reading ---------------------------------------------------------------------------------
    def fps(self) -> float:
        """Frames per second over the last minute or so (from successive calls)."""
        now = time.monotonic()
        with self._lock:
            frames = self.counts["frames"]
            self._fps_marks.append((now, frames))
            while len(self._fps_marks) > 2 and now - self._fps_marks[0][0] > 60:
                self._fps_marks.popleft()
            t0, f0 = self._fps_marks[0]
        if now - t0 <= 0:
            elapsed = now - self.started_mono
            return frames / elapsed if elapsed > 0 else 0.0
        return (frames - f0) / (now - t0)

    def latency(self) -> dict[str, tuple[float, float, int]]:
        out = {}
        for stage, w in self.windows.items():
            p = w.percentiles()
            if p is not None:
                out[stage] = p
        return out

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "counts": dict(self.counts),
                "invalid": dict(self.invalid_counts),
                "verdicts": dict(self.verdict_counts),
            }
