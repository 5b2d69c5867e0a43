"""Inbound MQTT messages: handed from paho's network thread to the handler on a dispatcher thread.

paho calls :meth:`Inbox.on_message` on its network thread, which also processes PUBACKs; a slow
handler must not stall that, so messages wait in a bounded queue and one ``mqtt-dispatch`` thread
calls the handler in arrival order. When the handler falls ``maxsize`` messages behind, new
messages are dropped, counted and warned about (at most every 10 s), never silently.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import paho.mqtt.client as mqtt

from agent.delivery.counters import LinkCounters

__all__ = ["INBOX_MAX", "Inbox", "MessageHandler"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]

INBOX_MAX = 1000
_DROP_WARN_EVERY_S = 10


class Inbox:
    """The bounded queue and dispatcher thread between paho and ``handler(topic, payload)``."""

    def __init__(self, handler: Optional[MessageHandler], counters: LinkCounters, maxsize: int = INBOX_MAX):
        self.handler = handler
        self.counters = counters
        self.maxsize = maxsize
        self._queue: queue.Queue[Optional[tuple[str, bytes]]] = queue.Queue(maxsize=maxsize)
        self._thread: Optional[threading.Thread] = None
        self._last_drop_warn = 0.0

    def start(self) -> None:
        """Start the dispatcher thread (none without a handler: messages are only counted)."""
        if self.handler is not None:
            self._thread = threading.Thread(target=self._dispatch, name="mqtt-dispatch", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        """Let the dispatcher finish what is queued (up to ``timeout`` s) and end."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout)

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's ``on_message`` (network thread): count, queue, or drop when the queue is full."""
        self.counters.messages_received += 1
        if self.handler is None:
            return
        try:
            self._queue.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.counters.messages_dropped += 1
            now = time.monotonic()
            if now - self._last_drop_warn > _DROP_WARN_EVERY_S:
                self._last_drop_warn = now
                log.warning(
                    "incoming MQTT messages dropped: the handler is %d messages behind (%d dropped so far)",
                    self.maxsize,
                    self.counters.messages_dropped,
                )

    def _dispatch(self) -> None:
        assert self.handler is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.handler(*item)
            except Exception:
                log.exception("handler for MQTT message on %s failed", item[0])
