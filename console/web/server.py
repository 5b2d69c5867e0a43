"""Run the console: open the store, start the MQTT ingest, serve the web app with uvicorn.

The listening socket is bound first (:func:`bind`), so a taken port is reported before anything
else starts. Stopping (Ctrl-C, SIGTERM) ends the open event streams, then uvicorn, then the ingest,
then the store.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import uvicorn

log = logging.getLogger(__name__)

__all__ = ["ListenError", "Stopped", "bind", "load_secret", "open_images", "run"]


class Stopped(Exception):
    """SIGTERM arrived: the console stopped in order (uvicorn re-raises the signal after its own
    graceful shutdown; this handler turns it into an exception so the ingest and store close too)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Stopped(f"stopped by signal {signum}")


class ListenError(OSError):
    """The console cannot listen where it was told to; the message names the cause and the fix."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening; uvicorn does that)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is already in use (another console or program listens there); "
                "stop it or choose another port with --port"
            ) from e
        if e.errno == errno.EACCES:
            raise ListenError(f"not allowed to listen on port {port}: use a port above 1023 (--port)") from e
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}; check --host") from e
    sock.set_inheritable(True)
    return sock


def load_secret(path: Path) -> str:
    """The session-signing key in ``path``, created (random, mode 0600) when missing."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_urlsafe(48)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it just now
            return load_secret(path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        log.info("created the session key %s", path)
        return text
    if len(text) < 32:
        raise ValueError(
            f"the session key in {path} is too short (under 32 characters): delete it to make a new one"
        )
    return text


def open_images(spec: str) -> Any:
    """``s3://bucket/prefix`` -> S3Images; anything else is a folder (created when missing)."""
    from console.images import FolderImages, S3Images

    if spec.startswith("s3://"):
        return S3Images(spec)
    folder = Path(spec).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return FolderImages(folder)


def open_store(db_url: str, images: str) -> Any:
    from console.store import ConsoleStore

    return ConsoleStore.open(db_url, open_images(images))


def run(
    cfg: Any, sock: socket.socket, store: Any, secret: str, *, on_ready: Optional[Callable[[], None]] = None
) -> None:
    """Serve until stopped; closes ``store`` and ``sock`` at the end. ``cfg`` is a
    :class:`console.config.ConsoleConfig`, ``sock`` from :func:`bind`, ``store`` from
    :func:`open_store`, ``secret`` from :func:`load_secret`."""
    from console.ingest import Ingest
    from console.web.app import make_app
    from console.web.events import EventHub

    hub = EventHub()
    ingest = Ingest(
        cfg.mqtt, store, sites=cfg.sites or None, client_id=cfg.mqtt.client_id, on_event=hub.publish
    )
    app = make_app(
        store,
        ingest,
        hub,
        secret_key=secret,
        session_hours=cfg.web.session_hours,
        https_only=cfg.web.https_only,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=3,
    )
    server = _Server(config, hub, on_ready)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        ingest.start()
        server.run(sockets=[sock])
    finally:
        hub.close()
        ingest.stop()
        store.close()
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server that ends the event streams first when it stops (else each open page would
    hold the shutdown for the graceful timeout), and tells ``on_ready`` when it listens."""

    def __init__(self, config: uvicorn.Config, hub: Any, on_ready: Optional[Callable[[], None]]) -> None:
        super().__init__(config)
        self.hub = hub
        self.on_ready = on_ready

    async def startup(self, sockets: Optional[list[socket.socket]] = None) -> None:
        await super().startup(sockets=sockets)
        if self.on_ready is not None and self.started:
            self.on_ready()

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        self.hub.close()
        await super().shutdown(sockets=sockets)
