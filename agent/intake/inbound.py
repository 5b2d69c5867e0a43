"""Incoming MQTT messages: ``bin`` events, retained ``manifest/<bin_id>``, and ``cmd/<name>``.

Every refused message (too big, not JSON, wrong types, unknown camera or command) is logged with
its cause (rate-limited) and counted by ``<topic kind>:<reason>`` in ``stats.invalid_messages`` and
``binwatch_invalid_messages``; the agent keeps running.

- ``bin`` starts a presentation on its camera (handed to the inference pipeline);
- ``manifest/<bin_id>`` of this site updates the manifest store;
- ``cmd/<name>`` goes to the command handler (:mod:`agent.commands`);
- ``model/desired`` (the device's, its groups', the fleet's) goes to the updater
  (:mod:`agent.update.updater`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Optional

from agent.intake.journal import EventJournal, JournalError
from agent.intake.presentations import Presentation
from contract.base import ContractError, utcnow
from contract.messages import BinEvent
from contract.topics import parse_topic

if TYPE_CHECKING:
    from agent.intake.manifests import ManifestStore
    from agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

__all__ = ["MAX_PAYLOAD", "MessageHandler", "NotAccepted", "Refusals"]

MAX_PAYLOAD = {
    "bin": 64 * 1024,
    "cmd": 64 * 1024,
    "manifest": 256 * 1024,
    "model_desired": 16 * 1024,
    "group_desired": 16 * 1024,
    "fleet_desired": 16 * 1024,
}
_WARN_EVERY_S = 5.0

CommandHandler = Callable[[str, str, bytes], None]
"""``(topic, name, payload)`` of a ``cmd/<name>`` message."""

DesiredHandler = Callable[[str, str, bytes], None]
"""``(scope, topic, payload)`` of a desired-model message; scope ``device``, ``group:<g>`` or ``fleet``."""


class NotAccepted(Exception):
    """Raised by the handler when it could not take a message durably (the journal cannot store a
    bin event): the link leaves it unacknowledged, so the broker sends it again later."""


class Refusals:
    """Counts refused messages and warns about them, at most once per ``_WARN_EVERY_S`` per cause."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self._last_warn: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, kind: str, reason: str, topic: str, detail: str) -> None:
        self.metrics.invalid_message(kind, reason)
        key = f"{kind}:{reason}"
        now = time.monotonic()
        if now - self._last_warn.get(key, 0.0) >= _WARN_EVERY_S:
            more = self._suppressed.pop(key, 0)
            extra = f" (+{more} similar since the last warning)" if more else ""
            log.warning("refused message on %s (%s): %s%s", topic, reason, detail[:500], extra)
            self._last_warn[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


class MessageHandler:
    """Dispatches one incoming message (the link's ``on_message``, on its dispatcher thread)."""

    def __init__(
        self,
        *,
        prefix: str,
        site: str,
        cameras: Collection[str],
        frames_per_event: int,
        manifests: ManifestStore,
        start_presentation: Callable[[Presentation], None],
        on_command: CommandHandler,
        refuse: Refusals,
        on_desired: Optional[DesiredHandler] = None,
        journal: Optional[EventJournal] = None,
        fail_event: Optional[Callable[[Presentation, str], None]] = None,
        max_age_s: float = 30.0,
    ) -> None:
        self.prefix = prefix
        self.site = site
        self.cameras = cameras
        self.frames_per_event = frames_per_event
        self.manifests = manifests
        self.start_presentation = start_presentation
        self.on_command = on_command
        self.refuse = refuse
        self.on_desired = on_desired
        self.journal = journal
        self.fail_event = fail_event
        self.max_age_s = max_age_s

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            info = parse_topic(topic, self.prefix)
        except ValueError as e:
            self.refuse("unknown", "bad-topic", topic, str(e))
            return
        kind = info.kind
        limit = MAX_PAYLOAD.get(kind)
        if limit is not None and len(payload) > limit:
            self.refuse(kind, "oversized", topic, f"{len(payload)} bytes, the limit is {limit}")
            return
        try:
            if kind == "manifest":
                if info.site != self.site or info.arg is None:
                    return
                self._manifest(topic, info.arg, payload)
            elif kind == "bin":
                self._bin(topic, payload)
            elif kind == "cmd" and info.arg is not None:
                self.on_command(topic, info.arg, payload)
            elif kind in ("model_desired", "group_desired", "fleet_desired") and self.on_desired is not None:
                scope = {"model_desired": "device", "fleet_desired": "fleet"}.get(kind, f"group:{info.arg}")
                self.on_desired(scope, topic, payload)
            else:
                log.debug("ignoring message on %s (%s)", topic, kind)
        except JournalError as e:
            raise NotAccepted(str(e)) from e
        except Exception as e:
            self.refuse(kind, "error", topic, f"{type(e).__name__}: {e}")
            log.debug("handler error", exc_info=True)

    def _manifest(self, topic: str, bin_id: str, payload: bytes) -> None:
        try:
            entry = self.manifests.on_mqtt(bin_id, payload)
        except ContractError as e:
            self.refuse("manifest", "invalid", topic, str(e))
            return
        if entry is not None:
            log.debug("manifest: bin %s expects %d", bin_id, entry.expected_qty)

    def _bin(self, topic: str, payload: bytes) -> None:
        try:
            ev = BinEvent.parse(payload)
        except ContractError as e:
            self.refuse("bin", "invalid", topic, str(e))
            return
        if ev.camera not in self.cameras:
            self.refuse("bin", "unknown-camera", topic, f"camera {ev.camera!r} is not configured here")
            return
        if self.journal is not None and not self.journal.accept(ev.camera, ev.event_id, ev.bin_id, payload):
            log.info("bin event %s (camera %s) seen before: not decided again", ev.event_id, ev.camera)
            return
        self._start(ev, _sent_age(ev))

    def resume_pending(self) -> int:
        """At start: the journal's events that have no outcome yet (the agent stopped or died before
        deciding them) are captured again when still fresh, else reported failed. Returns how many."""
        if self.journal is None:
            return 0
        pending = self.journal.pending()
        for p in pending:
            try:
                ev = BinEvent.parse(p.payload)
            except ContractError:
                ev = BinEvent(bin_id=p.bin_id, camera=p.camera, event_id=p.event_id)
            self._start(ev, max(p.age_s, _sent_age(ev)), resumed=True)
        if pending:
            log.info("resumed %d bin event(s) that had no outcome when the agent last stopped", len(pending))
        return len(pending)

    def _start(self, ev: BinEvent, age_s: float, *, resumed: bool = False) -> None:
        pres = Presentation(
            camera=ev.camera,
            bin_id=ev.bin_id,
            event_id=ev.event_id,
            kind="event",
            needed=ev.frames or self.frames_per_event,
            event_qty=ev.expected(),
        )
        if age_s > self.max_age_s and self.fail_event is not None:
            why = "the agent restarted before deciding it" if resumed else "it waited at the broker"
            self.fail_event(pres, f"stale: {age_s:.0f} s old ({why}; events.max_age_s is {self.max_age_s:g})")
            return
        self.start_presentation(pres)
        log.debug(
            "bin %s at camera %s (event %s): capturing %d frame(s)",
            ev.bin_id,
            ev.camera,
            ev.event_id,
            pres.needed,
        )


def _sent_age(ev: BinEvent) -> float:
    """Seconds since the event's ``ts`` (when the bin reached the camera); 0 without one."""
    return (utcnow() - ev.ts).total_seconds() if ev.ts is not None else 0.0
