"""The agent's local HTTP endpoint (stdlib ``ThreadingHTTPServer``, 127.0.0.1 by default).

- ``GET /healthz``: 200 while the agent's loops are running.
- ``GET /readyz``: 200 when a model is loaded and warm and every camera is live (or a replay
  finished), else 503 with the reasons.
- ``GET /metrics``: Prometheus text format.
- ``POST /v1/count``: an image (JPEG/PNG bytes) in, the count distribution out as JSON;
  ``?expected=N`` adds ``p_expected`` and the verdict.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Protocol
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)

__all__ = ["AgentHttpServer", "HttpBackend"]


class HttpBackend(Protocol):
    """What the server needs from the runtime."""

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_text(self) -> tuple[bytes, str]: ...

    def count_image(self, data: bytes, expected: Optional[int]) -> dict[str, Any]: ...


class CountError(ValueError):
    """Bad input to /v1/count (HTTP 400/413/503 with the message)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _make_handler(app: HttpBackend, max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "binwatch-agent"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # route to logging, not stderr
            log.debug("http %s - %s", self.address_string(), fmt % args)

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj, default=str).encode("utf-8") + b"\n")

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            try:
                if path == "/healthz":
                    ok, info = app.health()
                    self._json(200 if ok else 503, info)
                elif path == "/readyz":
                    ok, info = app.readiness()
                    self._json(200 if ok else 503, info)
                elif path == "/metrics":
                    body, ctype = app.metrics_text()
                    self._send(200, body, ctype)
                else:
                    self._json(
                        404, {"error": f"no such endpoint {path}; try /healthz /readyz /metrics /v1/count"}
                    )
            except Exception as e:
                log.exception("http GET %s failed", path)
                self._json(500, {"error": f"{type(e).__name__}: {e}"})

        do_HEAD = do_GET

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path != "/v1/count":
                self._json(404, {"error": f"no such endpoint {url.path}; POST an image to /v1/count"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._json(411, {"error": "Content-Length required (send the image bytes as the body)"})
                return
            n = int(length)
            if n > max_body:
                self._json(413, {"error": f"image of {n} bytes exceeds the limit of {max_body} bytes"})
                self.close_connection = True
                return
            data = self.rfile.read(n)
            expected: Optional[int] = None
            q = parse_qs(url.query).get("expected")
            if q:
                if not q[0].isdigit():
                    self._json(400, {"error": f"expected={q[0]!r} is not a non-negative integer"})
                    return
                expected = int(q[0])
            try:
                self._json(200, app.count_image(data, expected))
            except CountError as e:
                self._json(e.status, {"error": str(e)})
            except Exception as e:
                log.exception("http /v1/count failed")
                self._json(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


class AgentHttpServer:
    """Runs the server on its own thread; ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(self, app: HttpBackend, host: str = "127.0.0.1", port: int = 8780, max_body: int = 16 << 20):
        self._server = ThreadingHTTPServer((host, port), _make_handler(app, max_body))
        self._server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        log.info("http: serving /healthz /readyz /metrics /v1/count on %s", self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
