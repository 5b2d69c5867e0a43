"""Inbound MQTT messages: handed from paho's network thread to the handler on a dispatcher thread,
and acknowledged to the broker only after the handler accepted them.

paho calls :meth:`Inbox.on_message` on its network thread, which also processes PUBACKs; a slow
handler must not stall that, so messages wait in a queue and one ``mqtt-dispatch`` thread calls the
handler in arrival order. The link turns paho's automatic acknowledgement off
(``manual_ack_set(True)``): a QoS 1 message is acknowledged (PUBACK) after the handler returned,
i.e. after a bin event is in the journal on disk. A handler that raises :class:`NotAccepted` (the
journal cannot store it) leaves the message unacknowledged: the broker keeps it in the session and
sends it again on the next connection.

Backpressure instead of drops: the broker sends at most ``receive_maximum`` (MQTT 5; mosquitto's
``max_inflight_messages`` under 3.1.1) unacknowledged QoS 1 messages, and queues the rest itself, so
QoS 1 messages are never dropped here. QoS 0 messages (no acknowledgement, the sender accepted their
loss) are dropped when ``maxsize`` are waiting: counted and warned about (at most every 10 s).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import paho.mqtt.client as mqtt

from agent.delivery.counters import LinkCounters
from agent.intake.inbound import NotAccepted

__all__ = ["INBOX_MAX", "Inbox", "MessageHandler"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]

INBOX_MAX = 1000
_DROP_WARN_EVERY_S = 10


@dataclass
class _Item:
    topic: str
    payload: bytes
    mid: int
    qos: int
    client: mqtt.Client


class Inbox:
    """The queue and dispatcher thread between paho and ``handler(topic, payload)``."""

    def __init__(self, handler: Optional[MessageHandler], counters: LinkCounters, maxsize: int = INBOX_MAX):
        self.handler = handler
        self.counters = counters
        self.maxsize = maxsize
        self._queue: queue.Queue[Optional[_Item]] = queue.Queue()
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
            self._queue.put(None)
            self._thread.join(timeout)

    def waiting(self) -> int:
        """Messages received and not yet handled."""
        return self._queue.qsize()

    def on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's ``on_message`` (network thread): count and queue; QoS 0 beyond ``maxsize`` is dropped."""
        self.counters.messages_received += 1
        qos = int(message.qos)
        if self.handler is None:
            _ack(client, message.mid, qos)
            return
        if qos == 0 and self._queue.qsize() >= self.maxsize:
            self._dropped()
            return
        self._queue.put(_Item(message.topic, bytes(message.payload), message.mid, qos, client))

    def _dropped(self) -> None:
        self.counters.messages_dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warn > _DROP_WARN_EVERY_S:
            self._last_drop_warn = now
            log.warning(
                "incoming QoS 0 MQTT messages dropped: the handler is %d messages behind (%d dropped so far)",
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
                self.handler(item.topic, item.payload)
            except NotAccepted as e:
                self.counters.messages_unacked += 1
                log.error(
                    "message on %s not accepted (%s); left unacknowledged: the broker sends it again "
                    "on the next connection",
                    item.topic,
                    e,
                )
                continue
            except Exception:
                log.exception("handler for MQTT message on %s failed", item.topic)
            _ack(item.client, item.mid, item.qos)


def _ack(client: mqtt.Client, mid: int, qos: int) -> None:
    """PUBACK (QoS 1) / PUBREC (QoS 2) now; nothing for QoS 0. A connection that has gone since is
    harmless: the broker re-sends the message on the next one (the journal recognises it)."""
    if qos > 0:
        with contextlib.suppress(Exception):
            client.ack(mid, qos)
