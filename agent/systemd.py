"""systemd service notifications (``sd_notify``) with the standard library only.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``). The agent says
``READY=1`` once started, ``WATCHDOG=1`` at least every half watchdog interval while healthy, and
``STOPPING=1`` when it stops (docs/jetson.md, "Watchdog"). Without ``$NOTIFY_SOCKET`` (a shell, a
container, the tests) every call does nothing. No call raises: a failed send is logged at debug
and reported as ``False``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Optional

__all__ = ["SystemdNotifier"]

log = logging.getLogger(__name__)

_SEND_TIMEOUT_S = 1.0


def _address(raw: Optional[str]) -> Optional[str]:
    """The AF_UNIX address for ``$NOTIFY_SOCKET``: an absolute path, or ``@name`` -> ``\\0name``."""
    if not raw:
        return None
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    log.debug("NOTIFY_SOCKET=%r is neither an absolute path nor @abstract: notifications off", raw)
    return None


class SystemdNotifier:
    """Sends ``sd_notify`` messages to systemd; a no-op when not started by systemd.

    ``env`` defaults to ``os.environ`` (read once, here).
    """

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        environ = os.environ if env is None else env
        self._addr = _address(environ.get("NOTIFY_SOCKET"))
        self._watchdog_usec = environ.get("WATCHDOG_USEC")
        self._watchdog_pid = environ.get("WATCHDOG_PID")

    @property
    def enabled(self) -> bool:
        """True when systemd gave a notification socket (``Type=notify``)."""
        return self._addr is not None

    def watchdog_interval(self) -> Optional[float]:
        """The watchdog timeout in seconds, or None when no watchdog applies to this process.

        Like ``sd_watchdog_enabled()``: ``$WATCHDOG_USEC`` must be a positive integer, and when
        ``$WATCHDOG_PID`` is set it must be this process's id. Ping at least every half of it.
        """
        raw = self._watchdog_usec
        if not raw:
            return None
        try:
            usec = int(raw.strip(), 10)
        except ValueError:
            log.debug("WATCHDOG_USEC=%r is not an integer: no watchdog", raw)
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                pid = int(self._watchdog_pid.strip(), 10)
            except ValueError:
                log.debug("WATCHDOG_PID=%r is not an integer: no watchdog", self._watchdog_pid)
                return None
            if pid != os.getpid():
                return None
        return usec / 1_000_000

    def ready(self, status: Optional[str] = None) -> bool:
        """Start-up is complete (``READY=1``); systemd starts the watchdog from here."""
        return self._send("READY=1", status)

    def watchdog(self) -> bool:
        """Keep-alive ping (``WATCHDOG=1``); send only while the agent is healthy."""
        return self._send("WATCHDOG=1")

    def stopping(self, status: Optional[str] = None) -> bool:
        """The agent is shutting down (``STOPPING=1``)."""
        return self._send("STOPPING=1", status)

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status`` (``STATUS=...``)."""
        return self._send(None, text)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more for the current start or stop (``EXTEND_TIMEOUT_USEC``)."""
        return self._send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def _send(self, field: Optional[str], status: Optional[str] = None) -> bool:
        if self._addr is None:
            return False
        lines = [field] if field else []
        if status is not None:
            lines.append("STATUS=" + " ".join(status.splitlines()))
        if not lines:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT_S)  # a stalled manager must not stall the caller
                sock.sendto("\n".join(lines).encode("utf-8"), self._addr)
        except (OSError, ValueError) as e:
            log.debug("sd_notify %s to %r failed: %s", lines[0], self._addr.replace("\0", "@"), e)
            return False
        return True
