"""Live updates for the pages: the ingest's events (called on the MQTT thread) fanned out to every
open page as Server-Sent Events (``GET /events``).

Each page holds one ``EventSource``; each gets its own bounded queue on the server's event loop. A
page that falls behind (its queue full) loses the events and is sent one ``resync`` event instead,
upon which it reloads what it shows. A comment line every few seconds keeps proxies from closing an
idle stream and lets the server notice a page that went away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, Optional

from starlette.requests import Request
from starlette.responses import StreamingResponse

log = logging.getLogger(__name__)

__all__ = ["KINDS", "EventHub", "event_stream"]

KINDS = ("alert", "snapshot", "device", "review", "broker")
_CLOSE = ("close", {})
_RESYNC = ("resync", {})


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=size)
        self.behind = False

    def offer(self, item: tuple[str, dict[str, Any]]) -> None:
        """On the event loop: queue ``item``, or note that this page fell behind."""
        if item is _CLOSE:
            while not self.queue.empty():
                self.queue.get_nowait()
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.behind = True


class EventHub:
    """Thread-safe fan-out: :meth:`publish` from any thread (the ingest's ``on_event``); each open
    stream reads its own queue."""

    def __init__(self, queue_size: int = 256, keepalive_s: float = 15.0) -> None:
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self._subs: set[_Subscriber] = set()
        self._lock = threading.Lock()
        self.closed = False

    def publish(self, kind: str, data: Optional[dict[str, Any]] = None) -> None:
        """Send ``kind`` with ``data`` to every open page (callable from any thread)."""
        self._send((kind, dict(data or {})))

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self.closed = True
        self._send(_CLOSE)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def _send(self, item: tuple[str, dict[str, Any]]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, item)
            except RuntimeError:  # that stream's loop is closed
                self._drop(sub)

    def _add(self) -> _Subscriber:
        sub = _Subscriber(asyncio.get_running_loop(), self.queue_size)
        with self._lock:
            self._subs.add(sub)
        return sub

    def _drop(self, sub: _Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """The text of one SSE stream, until the page goes away or the hub closes."""
        sub = self._add()
        try:
            yield "retry: 3000\n\n"
            while not self.closed:
                try:
                    kind, data = await asyncio.wait_for(sub.queue.get(), timeout=self.keepalive_s)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield ": keep-alive\n\n"
                    continue
                if (kind, data) == _CLOSE:
                    break
                if sub.behind:
                    sub.behind = False
                    kind, data = _RESYNC
                yield f"event: {kind}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
        finally:
            self._drop(sub)


def event_stream(request: Request) -> StreamingResponse:
    """``GET /events``: the hub's events for this page."""
    hub: EventHub = request.app.state.hub
    return StreamingResponse(
        hub.stream(request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
