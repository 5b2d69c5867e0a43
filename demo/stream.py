"""A stand-in camera: an MJPEG stream over HTTP (``multipart/x-mixed-replace``), the format many IP
cameras serve, read by the agent as a ``url`` camera (OpenCV/FFmpeg).

The demo puts the pictures of the bin now "in front of the camera" on the stream with
:meth:`MjpegCamera.show`; the stream cycles through them at ``fps`` until the next bin. Standard
library only.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["MjpegCamera"]

_BOUNDARY = "binwatchframe"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    camera: MjpegCamera


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        cam = self.server.camera
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            i = 0
            while not cam.closed.is_set():
                frame = cam.frame(i)
                i += 1
                head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n\r\n"
                self.wfile.write(head.encode() + frame + b"\r\n")
                self.wfile.flush()
                cam.sent += 1
                time.sleep(cam.period)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mjpeg: " + format, *args)


class MjpegCamera:
    """Serves ``http://127.0.0.1:<port>/stream.mjpg``; :meth:`show` changes what it shows."""

    def __init__(self, blank: bytes, *, fps: float = 15.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.period = 1.0 / fps
        self.closed = threading.Event()
        self.sent = 0
        self._lock = threading.Lock()
        self._frames: list[bytes] = [blank]
        self._server = _Server((host, port), _Handler)
        self._server.camera = self
        # a small send buffer: a slow reader gets fresh frames, not a backlog of the previous bin
        self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/stream.mjpg"

    def start(self) -> MjpegCamera:
        self._thread.start()
        return self

    def show(self, frames: list[bytes]) -> None:
        """From now on stream these JPEGs (cycled)."""
        if not frames:
            raise ValueError("show() needs at least one frame")
        with self._lock:
            self._frames = list(frames)

    def frame(self, i: int) -> bytes:
        with self._lock:
            return self._frames[i % len(self._frames)]

    def close(self) -> None:
        self.closed.set()
        self._server.shutdown()
        self._server.server_close()
