"""``cmd/<name>`` requests to a running agent (``CommandRequest``; the answer is a
``CommandResult`` on ``cmd/<name>/result``, stored in the outbox):

- ``reload`` ``{bundle?: path}``: load a bundle (default: the configured one); the old model serves
  until the new one is warm, a failed load keeps it.
- ``resync``: re-publish the retained status and model state.
- ``capture`` ``{camera?, bin_id?, expected_qty?, frames?}``: decide the next frames of a camera
  like a ``bin`` event (the result carries the verdict).

Each collaborator is passed in: the model store, the status and model-state publishers, the
presentation starter (the inference pipeline) and the replier.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from agent.inference.model_store import ModelLoadError, ModelStore
from agent.intake.presentations import Presentation
from contract.base import ContractError
from contract.fields import check_id
from contract.messages import CommandRequest

if TYPE_CHECKING:
    from agent.delivery.deliver import CommandReplies
    from agent.delivery.status import ModelStateReporter
    from agent.intake.inbound import Refusals

log = logging.getLogger(__name__)

__all__ = ["COMMANDS", "Commands"]

COMMANDS = ("reload", "resync", "capture")


class Commands:
    """Runs one ``cmd/<name>`` request (the inbound handler's ``on_command``)."""

    def __init__(
        self,
        *,
        store: ModelStore,
        bundle: Optional[Path],
        cameras: Collection[str],
        frames_per_event: int,
        start_presentation: Callable[[Presentation], None],
        publish_status: Callable[[], None],
        model_state: ModelStateReporter,
        replies: CommandReplies,
        refuse: Refusals,
    ) -> None:
        self.store = store
        self.bundle = bundle
        self.cameras = list(cameras)
        self.frames_per_event = frames_per_event
        self.start_presentation = start_presentation
        self.publish_status = publish_status
        self.model_state = model_state
        self.replies = replies
        self.refuse = refuse

    def __call__(self, topic: str, name: str, payload: bytes) -> None:
        try:
            req = CommandRequest.parse(payload)
        except ContractError as e:
            self.refuse("cmd", "invalid", topic, str(e))
            return
        if name not in COMMANDS:
            self.refuse("cmd", "unknown-command", topic, f"unknown command {name!r}")
            self.replies.done(
                name, req.request_id, False, f"unknown command {name!r}; known: {', '.join(COMMANDS)}"
            )
            return
        try:
            getattr(self, f"_cmd_{name}")(req)
        except (ValueError, TypeError) as e:
            self.refuse("cmd", "bad-args", topic, str(e))
            self.replies.done(name, req.request_id, False, str(e))

    def _cmd_resync(self, req: CommandRequest) -> None:
        self.publish_status()
        self.model_state.republish()
        self.replies.done("resync", req.request_id, True, "status and model state re-published")

    def _cmd_reload(self, req: CommandRequest) -> None:
        bundle = req.args.get("bundle", None)
        if bundle is not None and not isinstance(bundle, str):
            raise ValueError("args.bundle must be a path (string)")
        path = Path(bundle) if bundle else self.bundle
        if path is None:
            raise ValueError("no bundle given (args.bundle) and none configured")

        def work() -> None:
            try:
                m = self.store.load(path)
                self.replies.done(
                    "reload",
                    req.request_id,
                    True,
                    f"{m.card.name} v{m.card.version} active",
                    data={"name": m.card.name, "version": m.card.version, "backend": m.backend.name},
                )
            except ModelLoadError as e:
                self.replies.done("reload", req.request_id, False, f"load failed, previous model kept: {e}")

        threading.Thread(target=work, name="model-reload", daemon=True).start()

    def _cmd_capture(self, req: CommandRequest) -> None:
        a = req.args
        camera = a.get("camera") or (self.cameras[0] if len(self.cameras) == 1 else None)
        if not isinstance(camera, str) or camera not in self.cameras:
            raise ValueError(f"args.camera must name a configured camera ({', '.join(self.cameras)})")
        bin_id = a.get("bin_id", f"capture-{req.request_id}"[:128])
        if not isinstance(bin_id, str):
            raise ValueError("args.bin_id must be a string")
        check_id(bin_id, "bin_id")
        qty = a.get("expected_qty")
        if qty is not None and (not isinstance(qty, int) or isinstance(qty, bool) or qty < 0):
            raise ValueError("args.expected_qty must be a non-negative integer")
        frames = a.get("frames", self.frames_per_event)
        if not isinstance(frames, int) or isinstance(frames, bool) or not 1 <= frames <= 32:
            raise ValueError("args.frames must be an integer 1..32")
        self.start_presentation(
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
