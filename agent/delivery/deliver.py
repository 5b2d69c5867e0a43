"""Delivery of decided verdicts (the agent's ``delivery`` thread).

The inference pipeline hands over each :class:`Decided` verdict (or a presentation that ended
without one) with :meth:`Delivery.deliver` / :meth:`Delivery.fail`; one thread handles them in
order. For each verdict: a mismatch gets its snapshot (the deciding frame's JPEG, kept on the
device) and an :class:`~contract.messages.Alert` that is stored durably in the outbox (with the
next ``seq``) before anything else happens; every verdict with an expected quantity may go out on
``result``; then the verdict is appended to the verdict log and the replay position advances.
The ``alert_id`` is derived from the presentation (device, camera, bin, event), so a presentation
decided again after a crash yields the same id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union

from agent.delivery.snapshots import encode_jpeg
from agent.inference.decision import Decision, distribution_by_count
from agent.inference.pipeline import Decided
from agent.intake.presentations import Presentation
from agent.intake.sources import Frame
from contract.base import utcnow
from contract.messages import Alert, BinOutcome, Result, Snapshot

if TYPE_CHECKING:
    from agent.delivery.records import ReplayCursors, VerdictLog
    from agent.delivery.snapshots import SnapshotStore
    from agent.intake.journal import EventJournal
    from agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

__all__ = ["ALERT_NAMESPACE", "AlertSink", "CommandReplies", "Delivery", "alert_id_for"]

ALERT_NAMESPACE = uuid.UUID("6f1d5c2e-8a4b-4e53-9a57-1f0b3c2d7e91")


@dataclass
class _Failed:
    pres: Presentation
    reason: str


class AlertSink(Protocol):
    """Where alerts and results go: the MQTT link (:class:`agent.delivery.link.MqttLink`)."""

    @property
    def session(self) -> int: ...

    def enqueue_alert(self, alert: Alert, snapshot_jpeg: Optional[bytes] = None) -> Alert: ...

    def publish_result(self, payload: Result) -> bool: ...

    def enqueue_outcome(self, outcome: BinOutcome) -> None: ...


class CommandReplies(Protocol):
    """Answers to ``cmd/<name>`` requests (:class:`agent.delivery.replies.CommandReplier`)."""

    def done(
        self, name: str, request_id: str, ok: bool, detail: str = "", data: Optional[dict[str, Any]] = None
    ) -> None: ...


def alert_id_for(site: str, device: str, pres: Presentation) -> str:
    """The alert's UUID, derived from where and what was decided: the same presentation decided
    again (after a crash, before its replay position was saved) gets the same id."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{site}/{device}/{pres.camera}/{pres.bin_id}/{pres.event_id}"))


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


class Delivery:
    """The delivery queue and what its thread does with each item (see the module docstring)."""

    def __init__(
        self,
        *,
        site: str,
        device: str,
        sink: AlertSink,
        replies: CommandReplies,
        metrics: AgentMetrics,
        cursors: ReplayCursors,
        verdict_log: Optional[VerdictLog] = None,
        snapshots: Optional[SnapshotStore] = None,
        snapshot_quality: int = 90,
        publish_snapshots: bool = True,
        publish_results: bool = False,
        queue_size: int = 64,
        journal: Optional[EventJournal] = None,
    ) -> None:
        self.site, self.device = site, device
        self.sink = sink
        self.replies = replies
        self.metrics = metrics
        self.cursors = cursors
        self.verdict_log = verdict_log
        self.snapshots = snapshots
        self.snapshot_quality = snapshot_quality
        self.publish_snapshots = publish_snapshots  # the JPEG also goes out on alert/snapshot/<id>
        self.publish_results = publish_results
        self.journal = journal
        self._q: queue.Queue[Union[Decided, _Failed, None]] = queue.Queue(maxsize=queue_size)
        self._finished = threading.Event()

    # -- the pipeline's side (any thread) ----------------------------------------------------------
    def deliver(self, item: Decided) -> None:
        """Queue a verdict (blocks while the queue is full)."""
        self._put(item)

    def fail(self, pres: Presentation, reason: str) -> None:
        """Queue a presentation that ended without a verdict (counted as ``failed``)."""
        self._put(_Failed(pres, reason))

    def pending(self) -> int:
        """Items queued or being delivered."""
        return self._q.unfinished_tasks

    def close(self) -> None:
        """No more items: the loop ends after delivering what is queued."""
        self._q.put(None)

    def _put(self, item: Union[Decided, _Failed]) -> None:
        while True:
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._finished.is_set():
                    log.error("delivery stopped; verdict for bin %s not delivered", item.pres.bin_id)
                    return

    # -- the delivery thread -----------------------------------------------------------------------
    def loop(self) -> None:
        """Deliver queued items in order until :meth:`close`."""
        try:
            while True:
                try:
                    item = self._q.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    if item is None:
                        return
                    if isinstance(item, _Failed):
                        self._failed(item.pres, item.reason)
                    else:
                        self._deliver(item)
                except Exception:
                    self.metrics.error("delivery")
                    log.exception("delivering a verdict failed")
                finally:
                    self._q.task_done()
        finally:
            self._finished.set()

    def _deliver(self, item: Decided) -> None:
        t0 = time.perf_counter()
        pres, d = item.pres, item.decision
        frame = pres.last_frame
        assert frame is not None
        self.metrics.verdict(d.verdict)
        record: dict[str, Any] = {
            "ts": time.time(),
            "camera": pres.camera,
            "bin_id": pres.bin_id,
            "event_id": pres.event_id,
            "frame_ts": frame.ts,
            "expected_source": item.expected_source,
            **d.to_dict(),
        }
        common = self._common_fields(item, frame)
        if d.verdict == "mismatch":
            stored = self._store_alert(pres, d, frame, common)
            record.update(alert_id=stored.alert_id, seq=stored.seq)
        wants_result = d.verdict in ("match", "mismatch", "uncertain") and d.expected_qty is not None
        if self.publish_results and wants_result:
            result = Result(
                **common,
                result_id=record.get("alert_id") or str(uuid.uuid4()),
                verdict=d.verdict,  # type: ignore[arg-type]
                seq=int(record.get("seq", 0)),
                session=self.sink.session,
                p_expected=float(d.p_expected or 0.0),
            )
            self.sink.publish_result(result)
        if self.verdict_log is not None:
            self.verdict_log.write(record)
        if pres.replay_index is not None:
            self.cursors.advance(pres.camera, pres.replay_index)
        if d.verdict == "no_manifest":
            log.debug("bin %s: no manifest (predicted %d): not alerted", pres.bin_id, d.predicted_qty)
        if pres.kind == "event":
            self._outcome(pres, d.verdict, d=d, alert_id=record.get("alert_id"))
        if pres.request_id:
            self.replies.done("capture", pres.request_id, True, f"{d.verdict}", data=record)
        self.metrics.observe("deliver", time.perf_counter() - t0)
        if pres.first_mono is not None:
            self.metrics.observe("total", time.monotonic() - frame.mono)

    def _common_fields(self, item: Decided, frame: Frame) -> dict[str, Any]:
        """The fields an alert and a result share (built once per presentation)."""
        pres, d = item.pres, item.decision
        return {
            "site": self.site,
            "device": self.device,
            "camera": pres.camera,
            "bin_id": pres.bin_id,
            "event_id": pres.event_id,
            "frame_ts": _ts(frame.ts),
            "expected_qty": d.expected_qty,
            "predicted_qty": d.predicted_qty,
            "distribution": distribution_by_count(d, item.overflow),
            "frames": d.frames,
            "model": item.ref,
        }

    def _store_alert(self, pres: Presentation, d: Decision, frame: Frame, common: dict[str, Any]) -> Alert:
        assert d.expected_qty is not None and d.p_expected is not None
        snapshot, jpeg = self._snapshot(pres, frame)
        alert = Alert(
            **common,
            alert_id=alert_id_for(self.site, self.device, pres),
            seq=0,
            session=0,
            p_expected=float(d.p_expected),
            snapshot=snapshot,
        )
        # with a picture to publish, it is stored with the alert (same transaction, right after it)
        stored = self.sink.enqueue_alert(alert, jpeg) if jpeg is not None else self.sink.enqueue_alert(alert)
        self.metrics.alert()
        return stored

    def _failed(self, pres: Presentation, reason: str) -> None:
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
        if pres.kind == "event":
            self._outcome(pres, "failed", reason=reason)
        if pres.request_id:
            self.replies.done("capture", pres.request_id, False, reason)

    def _outcome(
        self,
        pres: Presentation,
        outcome: str,
        *,
        reason: str = "",
        d: Optional[Decision] = None,
        alert_id: Optional[str] = None,
    ) -> None:
        """How a bin event ended: into the outbox (``bin/outcome``), then marked in the journal.
        A crash between the two reports the event once more at the next start (at least once)."""
        self.sink.enqueue_outcome(
            BinOutcome(
                site=self.site,
                device=self.device,
                camera=pres.camera,
                bin_id=pres.bin_id,
                event_id=pres.event_id,
                outcome=outcome,  # type: ignore[arg-type]
                reason=reason[:4096],
                expected_qty=d.expected_qty if d is not None else None,
                predicted_qty=int(d.predicted_qty) if d is not None else None,
                p_expected=float(d.p_expected) if d is not None and d.p_expected is not None else None,
                alert_id=alert_id,
                ts=utcnow(),
            )
        )
        if self.journal is not None:
            self.journal.finish(pres.camera, pres.event_id, outcome, reason)

    def _snapshot(self, pres: Presentation, frame: Frame) -> tuple[Optional[Snapshot], Optional[bytes]]:
        """The saved snapshot, and its JPEG when it is to be published (else None)."""
        if self.snapshots is None:
            return None, None
        try:
            data = frame.jpeg if frame.jpeg else encode_jpeg(frame.image, self.snapshot_quality)
            ref = self.snapshots.save(data, camera=pres.camera, bin_id=pres.bin_id, ts=frame.ts)
            return Snapshot(uri=ref.uri, sha256=ref.sha256, size=ref.size), (
                data if self.publish_snapshots else None
            )
        except (OSError, ValueError) as e:
            self.metrics.error("snapshot")
            log.warning("snapshot for bin %s not saved: %s", pres.bin_id, e)
            return None, None
