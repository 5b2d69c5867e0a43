"""``binwatch deploy serve``: bundle files over HTTP for small sites (docs/deploy.md, "Pushing a
model to the fleet").

Starlette's ``StaticFiles`` does the file serving (GET and HEAD, ``Range`` with 206 and 416,
``ETag``/``If-Range``, 405 for other methods) and refuses any path that resolves outside the folder,
symbolic links that point out of it included; uvicorn runs it. On top of that this module refuses
hidden names (any path part starting with ``.``, e.g. the temporary files of an atomic copy) and
never lists a folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

__all__ = ["make_app", "parse_listen", "serve"]


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8088`` for IPv6) -> ``(host, port)``; ValueError naming the problem."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {listen!r}: give HOST:PORT, e.g. 127.0.0.1:8088 or 0.0.0.0:8088")
    return host, int(port_text)


def make_app(root: Path) -> Any:
    """The ASGI app (a ``starlette.applications.Starlette``) that serves the files under ``root``
    and nothing else; its exception middleware turns refusals into 404 and 405 answers."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    class BundleFiles(StaticFiles):
        def lookup_path(self, path: str) -> tuple[str, Optional[os.stat_result]]:
            if any(part.startswith(".") for part in Path(path).parts):
                return "", None  # hidden files (partial copies) and any '..' left after normpath
            return super().lookup_path(path)

    files = BundleFiles(directory=root, html=False, follow_symlink=False)
    return Starlette(routes=[Mount("/", app=files)])


def serve(root: Path, host: str, port: int, *, access_log: bool = True) -> None:
    """Serve ``root`` on ``host:port`` until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    config = uvicorn.Config(
        make_app(root),
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        lifespan="off",
        server_header=False,
    )
    log.info("serving %s on http://%s:%d/", root, host, port)
    uvicorn.Server(config).run()
