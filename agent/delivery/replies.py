"""Answers to ``cmd/<name>`` requests: a :class:`~contract.messages.CommandResult` on
``cmd/<name>/result``, stored in the outbox like an alert (QoS 1, survives an outage) through the
link's one road into the outbox."""

from __future__ import annotations

import logging
from typing import Any, Optional, Protocol

from contract.messages import CommandResult

__all__ = ["CommandReplier", "ResultOutbox"]

log = logging.getLogger(__name__)

_MAX_DATA_KEYS = 32


class ResultOutbox(Protocol):
    """What the replier needs from the link (:class:`agent.delivery.link.MqttLink`)."""

    def enqueue_command_result(self, name: str, result: CommandResult) -> None: ...


class CommandReplier:
    """Builds bounded, valid command results and hands them to the outbox."""

    def __init__(self, outbox: ResultOutbox) -> None:
        self.outbox = outbox

    def done(
        self, name: str, request_id: str, ok: bool, detail: str = "", data: Optional[dict[str, Any]] = None
    ) -> None:
        safe: dict[str, Any] = {}
        for k, v in (data or {}).items():
            if len(safe) >= _MAX_DATA_KEYS:
                break
            if isinstance(v, (str, int, float, bool)) or v is None or isinstance(v, dict):
                safe[str(k)[:64]] = v
        try:
            result = CommandResult(request_id=request_id, ok=ok, detail=detail[:4000], data=safe)
        except Exception as e:  # a value the contract refuses: answer without the data
            log.debug("command result data refused (%s); replying without it", e)
            result = CommandResult(request_id=request_id, ok=ok, detail=detail[:4000])
        self.outbox.enqueue_command_result(name, result)
