"""Incoming MQTT messages: ``bin`` events, retained ``manifest/<bin_id>``, and ``cmd/<name>``.

Every refused message (too big, not JSON, wrong types, unknown camera or command) is logged with
its cause (rate-limited) and counted by ``<topic kind>:<reason>`` in ``stats.invalid_messages`` and
``binwatch_invalid_messages``; the agent keeps running.

Commands (``CommandRequest``; the answer is a ``CommandResult`` on ``cmd/<name>/result``):

- ``reload`` ``{bundle?: path}``: load a bundle (default: the configured one); the old model serves
  until the new one is warm, a failed load keeps it.
- ``resync``: re-publish the retained status and model state.
- ``capture`` ``{camera?, bin_id?, expected_qty?, frames?}``: decide the next frames of a camera
  like a ``bin`` event (the result carries the verdict).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from contract.base import ContractError
from contract.fields import check_id
from contract.messages import BinEvent, CommandRequest, CommandResult
from contract.topics import parse_topic

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["COMMANDS", "MAX_PAYLOAD", "MessageHandler"]

MAX_PAYLOAD = {"bin": 64 * 1024, "cmd": 64 * 1024, "manifest": 256 * 1024}
COMMANDS = ("reload", "resync", "capture")
_WARN_EVERY_S = 5.0


class MessageHandler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._last_warn: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    # -- refusing ------------------------------------------------------------------------------
    def refuse(self, kind: str, reason: str, topic: str, detail: str) -> None:
        self.rt.metrics.invalid_message(kind, reason)
        key = f"{kind}:{reason}"
        now = time.monotonic()
        if now - self._last_warn.get(key, 0.0) >= _WARN_EVERY_S:
            more = self._suppressed.pop(key, 0)
            extra = f" (+{more} similar since the last warning)" if more else ""
            log.warning("refused message on %s (%s): %s%s", topic, reason, detail[:500], extra)
            self._last_warn[key] = now
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> None:
        try:
            info = parse_topic(topic, self.rt.topics.prefix)
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
                if info.site != self.rt.site or info.arg is None:
                    return
                self._manifest(topic, info.arg, payload)
            elif kind == "bin":
                self._bin(topic, payload)
            elif kind == "cmd" and info.arg is not None:
                self._command(topic, info.arg, payload)
            else:
                log.debug("ignoring message on %s (%s)", topic, kind)
        except Exception as e:
            self.refuse(kind, "error", topic, f"{type(e).__name__}: {e}")
            log.debug("handler error", exc_info=True)

    def _manifest(self, topic: str, bin_id: str, payload: bytes) -> None:
        try:
            entry = self.rt.manifests.on_mqtt(bin_id, payload)
        except ContractError as e:
            self.refuse("manifest", "invalid", topic, str(e))
            return
        if entry is not None:
            log.debug("manifest: bin %s expects %d", bin_id, entry.expected_qty)

    def _bin(self, topic: str, payload: bytes) -> None:
        from agent.intake.presentations import Presentation

        try:
            ev = BinEvent.parse(payload)
        except ContractError as e:
            self.refuse("bin", "invalid", topic, str(e))
            return
        if ev.camera not in self.rt.cameras:
            self.refuse("bin", "unknown-camera", topic, f"camera {ev.camera!r} is not configured here")
            return
        n = ev.frames or self.rt.cfg.decision.frames_per_event
        self.rt.start_presentation(
            Presentation(
                camera=ev.camera,
                bin_id=ev.bin_id,
                event_id=ev.event_id,
                kind="event",
                needed=n,
                event_qty=ev.expected(),
            )
        )
        log.debug(
            "bin %s at camera %s (event %s): capturing %d frame(s)", ev.bin_id, ev.camera, ev.event_id, n
        )

    # -- commands --------------------------------------------------------------------------------
    def command_done(
        self, name: str, request_id: str, ok: bool, detail: str = "", data: Optional[dict[str, Any]] = None
    ) -> None:
        safe: dict[str, Any] = {}
        for k, v in (data or {}).items():
            if len(safe) >= 32:
                break
            if isinstance(v, (str, int, float, bool)) or v is None or isinstance(v, dict):
                safe[str(k)[:64]] = v
        try:
            result = CommandResult(request_id=request_id, ok=ok, detail=detail[:4000], data=safe)
        except Exception:
            result = CommandResult(request_id=request_id, ok=ok, detail=detail[:4000])
        rt = self.rt
        rt.outbox.put(rt.topics.cmd_result(name), result.to_json_bytes(), qos=1)
        kick = getattr(rt.link, "kick", None) or getattr(rt.link, "_kick", None)
        if kick is not None:
            kick()

    def _command(self, topic: str, name: str, payload: bytes) -> None:
        try:
            req = CommandRequest.parse(payload)
        except ContractError as e:
            self.refuse("cmd", "invalid", topic, str(e))
            return
        if name not in COMMANDS:
            self.refuse("cmd", "unknown-command", topic, f"unknown command {name!r}")
            self.command_done(
                name, req.request_id, False, f"unknown command {name!r}; known: {', '.join(COMMANDS)}"
            )
            return
        try:
            getattr(self, f"_cmd_{name}")(req)
        except (ValueError, TypeError) as e:
            self.refuse("cmd", "bad-args", topic, str(e))
            self.command_done(name, req.request_id, False, str(e))

    def _cmd_resync(self, req: CommandRequest) -> None:
        rt = self.rt
        rt.link.publish_status()
        model = rt.store.current
        if model is not None:
            rt._on_model_state(
                model.card.version, "active", f"{model.backend.name} {model.backend.precision}"
            )
        self.command_done("resync", req.request_id, True, "status and model state re-published")

    def _cmd_reload(self, req: CommandRequest) -> None:
        from pathlib import Path

        from agent.inference.model_store import ModelLoadError

        rt = self.rt
        bundle = req.args.get("bundle", None)
        if bundle is not None and not isinstance(bundle, str):
            raise ValueError("args.bundle must be a path (string)")
        path = Path(bundle) if bundle else rt.cfg.model.bundle
        if path is None:
            raise ValueError("no bundle given (args.bundle) and none configured")

        def work() -> None:
            try:
                m = rt.store.load(path)
                self.command_done(
                    "reload",
                    req.request_id,
                    True,
                    f"{m.card.name} v{m.card.version} active",
                    data={"name": m.card.name, "version": m.card.version, "backend": m.backend.name},
                )
            except ModelLoadError as e:
                self.command_done("reload", req.request_id, False, f"load failed, previous model kept: {e}")

        threading.Thread(target=work, name="model-reload", daemon=True).start()

    def _cmd_capture(self, req: CommandRequest) -> None:
        from agent.intake.presentations import Presentation

        rt = self.rt
        a = req.args
        camera = a.get("camera") or (next(iter(rt.cameras)) if len(rt.cameras) == 1 else None)
        if not isinstance(camera, str) or camera not in rt.cameras:
            raise ValueError(f"args.camera must name a configured camera ({', '.join(rt.cameras)})")
        bin_id = a.get("bin_id", f"capture-{req.request_id}"[:128])
        if not isinstance(bin_id, str):
            raise ValueError("args.bin_id must be a string")
        check_id(bin_id, "bin_id")
        qty = a.get("expected_qty")
        if qty is not None and (not isinstance(qty, int) or isinstance(qty, bool) or qty < 0):
            raise ValueError("args.expected_qty must be a non-negative integer")
        frames = a.get("frames", rt.cfg.decision.frames_per_event)
        if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= 32:
            raise ValueError("args.frames must be an integer 1..32")
        rt.start_presentation(
            Presentation(
                camera=camera,
                bin_id=bin_id,
                event_id=f"cmd-{req.request_id}"[:128],
                kind="capture",
                needed=frames,
                event_qty=qty,
                request_id=req.request_id,
            )
        )
