"""The retained ``status``, the periodic ``stats`` and the retained ``model/reported`` messages.

:class:`StatusReporter` builds ``status`` and ``stats`` from the parts it is given (cameras, model
store, metrics, manifests); the MQTT link asks it for them when it (re)connects and every
``stats_interval_s``. :class:`ModelStateReporter` turns the model store's state changes into
``model/reported`` and re-publishes ``status`` when a new model becomes active.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, Protocol

from agent.inference.decision import VERDICTS
from contract.base import utcnow
from contract.messages import CameraStats, CameraStatus, ModelReported, StageLatency, Stats, Status

if TYPE_CHECKING:
    from agent.delivery.counters import LinkCounters
    from agent.delivery.outbox import Outbox
    from agent.inference.model_store import LoadedModel, ModelStore
    from agent.intake.capture import CaptureManager
    from agent.intake.journal import EventJournal
    from agent.intake.manifests import ManifestStore
    from agent.metrics import AgentMetrics

__all__ = [
    "STATS_VERDICTS",
    "ModelStateReporter",
    "StatusReporter",
    "camera_state",
    "status_payload",
    "verdict_counts",
]

log = logging.getLogger(__name__)

STATS_VERDICTS: tuple[str, ...] = (*VERDICTS, "failed")
"""The keys ``stats.verdicts`` always carries: the decision's verdicts, and ``failed`` for a
presentation that ended without a verdict (no frame arrived); the same labels as the
``binwatch_verdicts`` Prometheus counter and the ``verdict`` field of ``verdicts.jsonl``."""

# capture states -> the contract's camera states
_STATE = {
    "starting": "reconnecting",
    "live": "live",
    "reconnecting": "reconnecting",
    "stalled": "lost",
    "finished": "stopped",
    "stopped": "stopped",
}


def _agent_version() -> str:
    try:
        from binwatch import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - binwatch is part of the same distribution
        return "unknown"


def camera_state(state: str) -> str:
    return _STATE.get(state, "lost")


def status_payload(provider: Optional[Callable[[str], Status]], state: str, session: int) -> bytes:
    """The ``status`` bytes for ``state`` in ``session``: the provider's status (a running agent's
    :meth:`StatusReporter.status`), or a minimal one when there is none or it fails (e.g. the last will)."""
    status: Optional[Status] = None
    if provider is not None:
        try:
            status = provider(state)
        except Exception:
            log.exception("status_provider failed; publishing a minimal status")
    now = utcnow()
    if status is None:
        status = Status(state=state, session=session, ts=now, agent_version=_agent_version())  # type: ignore[arg-type]
    else:
        status = status.model_copy(update={"state": state, "session": session, "ts": now})
    return status.to_json_bytes()


def with_delivery(stats: Stats, outbox: Outbox, counters: LinkCounters) -> Stats:
    """``stats`` with the outbox and delivery fields filled in from the link's outbox and counters."""
    refused_waiting, _reason = outbox.refused()
    return stats.model_copy(
        update={
            "outbox_depth": outbox.depth(),
            "outbox_bytes": outbox.size_bytes(),
            "outbox_dropped": outbox.dropped(),
            "alerts_published": counters.alerts_published,
            "publish_refused": counters.publish_refused,
            "refused_waiting": refused_waiting,
            "last_refusal": counters.last_refusal or None,
        }
    )


def delivery_state(outbox: Outbox, journal: EventJournal) -> dict[str, Any]:
    """What ``/readyz`` says about delivery: alerts waiting, rows the broker refused (waiting for
    their retry) with its latest reason, and bin events without an outcome yet."""
    refused, reason = outbox.refused()
    return {
        "outbox_depth": outbox.depth(),
        "refused_waiting": refused,
        "last_refusal": reason,
        "bin_events_pending": journal.counts()["pending"],
    }


def verdict_counts(counted: Mapping[str, int]) -> dict[str, int]:
    """Totals by verdict for ``stats.verdicts``: every key of :data:`STATS_VERDICTS` (0 when none
    yet), then any other verdict that was counted."""
    out = {v: 0 for v in STATS_VERDICTS}
    for verdict, n in counted.items():
        out[str(verdict)[:64]] = out.get(str(verdict)[:64], 0) + int(n)
    return dict(list(out.items())[:16])


class StatusReporter:
    """Builds ``status`` and ``stats`` from the running agent's parts."""

    def __init__(
        self, *, capture: CaptureManager, store: ModelStore, metrics: AgentMetrics, manifests: ManifestStore
    ) -> None:
        self.capture = capture
        self.store = store
        self.metrics = metrics
        self.manifests = manifests

    def camera_key(self) -> tuple[Any, ...]:
        """What changes the published camera status (states and errors, not counters)."""
        return tuple((n, s.state, s.last_error) for n, s in sorted(self.capture.states.items()))

    def status(self, state: str) -> Status:
        """``status`` in ``state`` (the link fills in the session and the time)."""
        cams = {}
        for name, st in self.capture.states.items():
            cams[name] = CameraStatus(
                state=camera_state(st.state),  # type: ignore[arg-type]
                fps=float(round(st.fps(), 3)),
                last_frame_ts=datetime.fromtimestamp(st.last_frame_ts, tz=timezone.utc)
                if st.last_frame_ts
                else None,
                error=(st.last_error or None) and str(st.last_error)[:4000],
                dropped_frames=int(st.dropped),
                reconnects=int(st.reconnects + st.open_failures),
            )
        model = self.store.current
        return Status(
            state=state,  # type: ignore[arg-type]
            session=0,
            ts=utcnow(),
            agent_version=_agent_version(),
            model=model.ref if model is not None else None,
            cameras=cams,
        )

    def stats(self) -> Stats:
        """``stats`` without the outbox fields (the link fills those in)."""
        m = self.metrics
        latency = {
            stage: StageLatency(p50_ms=round(p50 * 1000, 3), p99_ms=round(max(p99, p50) * 1000, 3), n=n)
            for stage, (p50, p99, n) in m.latency().items()
        }
        cams = {}
        dropped = decode_errors = 0
        for name, st in self.capture.states.items():
            cams[name] = CameraStats(
                fps=float(round(st.fps(), 3)),
                frames_total=int(st.frames),
                frames_dropped=int(st.dropped),
                decode_errors=int(st.decode_errors),
            )
            dropped += st.dropped
            decode_errors += st.decode_errors
        snap = m.snapshot()
        invalid: dict[str, int] = dict(snap["invalid"])  # type: ignore[arg-type]
        for reason, n in self.manifests.invalid.items():
            invalid[f"{reason}:invalid"] = invalid.get(f"{reason}:invalid", 0) + n
        model = self.store.current
        counts: dict[str, int] = snap["counts"]  # type: ignore[assignment]
        return Stats(
            ts=utcnow(),
            uptime_s=float(round(max(0.0, time.monotonic() - m.started_mono), 3)),
            fps=float(round(m.fps(), 3)),
            frames_total=int(counts.get("frames", 0)),
            frames_dropped=int(dropped),
            decode_errors=int(decode_errors),
            latency=latency,
            invalid_messages={k[:256]: int(v) for k, v in list(invalid.items())[:64]},
            verdicts=verdict_counts(snap["verdicts"]),  # type: ignore[arg-type]
            backend=model.ref.backend if model else None,
            precision=model.ref.precision if model else None,
            cameras=cams,
        )


class ModelLink(Protocol):
    """What model-state reporting needs from the link (:class:`agent.delivery.link.MqttLink`)."""

    def report_model(self, reported: ModelReported) -> None: ...

    def publish_status(self) -> None: ...


class ModelStateReporter:
    """The model store's ``on_state`` callback: every state goes to ``model/reported`` (retained);
    ``active`` also updates the model gauge and re-publishes ``status``."""

    def __init__(
        self, link: ModelLink, metrics: AgentMetrics, current_model: Callable[[], Optional[LoadedModel]]
    ) -> None:
        self.link = link
        self.metrics = metrics
        self.current_model = current_model
        self.rollout_id: Optional[str] = None  # set by the updater for the rollout it is applying

    def __call__(self, version: int, state: str, detail: str) -> None:
        try:
            self.link.report_model(
                ModelReported(
                    version=version,
                    state=state,  # type: ignore[arg-type]
                    detail=detail[:4000],
                    ts=utcnow(),
                    rollout_id=self.rollout_id,
                )
            )
        except Exception as e:
            log.debug("model state not reported: %s", e)
        if state == "active":
            model = self.current_model()
            if model is not None:
                self.metrics.model_info.clear()
                r = model.ref
                self.metrics.model_info.labels(r.name, str(r.version), r.backend, r.precision).set(1)
            self.link.publish_status()

    def republish(self) -> None:
        """Report the current model as active again (``cmd/resync``)."""
        model = self.current_model()
        if model is not None:
            self(model.card.version, "active", f"{model.backend.name} {model.backend.precision}")
