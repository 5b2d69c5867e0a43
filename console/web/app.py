"""The console's ASGI app: routes, templates, sessions, the login guard and security headers.

``make_app(store, ingest, hub, secret_key=...)`` builds it around three collaborators: the
``ConsoleStore`` (alerts, snapshots, reviews, devices, users), the ``Ingest`` (broker state and
``publish_review``) and the :class:`console.web.events.EventHub` the ingest's ``on_event`` feeds.
Nothing here opens a connection; ``console.web.server`` runs it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.web import pages
from console.web.auth import (
    Guard,
    LoginThrottle,
    checked_form,
    csrf_token,
    safe_next,
    start_session,
    verify_password,
)
from console.web.events import event_stream
from console.web.views import STATES, fmt_ts, iso, state_label

log = logging.getLogger(__name__)

__all__ = ["make_app"]

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "binwatch_console"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


class SecurityHeaders:
    """Adds CSP, no-sniff, no-framing and referrer headers to every answer (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in (
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                ):
                    if name not in names:
                        headers.append((name, value))
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _common(request: Request) -> dict[str, Any]:
    """What every page shows: who is logged in, the CSRF token, the broker banner, the counters."""
    state = request.app.state
    user = getattr(request.state, "user", None)
    ingest = state.ingest

    def invalid_counts() -> dict[str, int]:
        if user is None:
            return {}
        try:
            return dict(state.store.invalid_counts())
        except Exception:
            log.exception("cannot read the invalid-message counters")
            return {}

    return {
        "user": user,
        "csrf": csrf_token(request),
        "take_flash": lambda: request.session.pop("flash", None),  # full pages only (base.html)
        "invalid_counts": invalid_counts,
        "broker_ok": bool(getattr(ingest, "connected", False)),
        "broker_error": str(getattr(ingest, "last_error", "") or ""),
        "title": state.title,
    }


def login_form(request: Request, error: str = "", status: int = 200) -> Response:
    """``GET /login``: the login form (already logged in: go on)."""
    if request.state.user is not None and not error:
        return RedirectResponse(safe_next(request.query_params.get("next")), 303)
    return request.app.state.templates.TemplateResponse(
        request,
        "login.html",
        {"page": "login", "next": safe_next(request.query_params.get("next")), "error": error},
        status_code=status,
    )


async def login(request: Request) -> Response:
    """``POST /login``: check name and password (argon2), start a new session, go to ``next``."""
    form = await checked_form(request)
    name = str(form.get("username", "")).strip()[:128]
    password = str(form.get("password", ""))
    client = request.client.host if request.client else "?"
    throttle = request.app.state.throttle
    wait = throttle.wait_s(name, client)
    if wait > 0:
        log.warning("login for %r from %s refused: too many failed logins", name, client)
        text = f"Too many failed logins. Try again in {math.ceil(wait)} s."
        return await run_in_threadpool(login_form, request, text, 429)
    record = await run_in_threadpool(request.app.state.store.user, name) if name else None
    ok = await run_in_threadpool(verify_password, record[0] if record else None, password)
    if not ok or record is None:
        throttle.failed(name, client)
        log.warning("failed login for %r from %s", name, client)
        return await run_in_threadpool(login_form, request, "Wrong user name or password.", 401)
    throttle.succeeded(name)
    start_session(request, name, record[1], record[0])
    log.info("%s logged in", name)
    return RedirectResponse(safe_next(str(form.get("next", "/"))), 303)


async def logout(request: Request) -> Response:
    """``POST /logout``: end the session."""
    await checked_form(request)
    request.session.clear()
    return RedirectResponse("/login", 303)


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and "text/html" in request.headers.get("accept", ""):
        templates = request.app.state.templates
        context = {"page": "error", "message": exc.detail}
        return await run_in_threadpool(templates.TemplateResponse, request, "error.html", context, 404)
    return PlainTextResponse(str(exc.detail), exc.status_code, headers=exc.headers)


def make_app(
    store: Any,
    ingest: Any,
    hub: Any,
    *,
    secret_key: str,
    session_hours: float = 12.0,
    https_only: bool = False,
    title: str = "binwatch console",
    templates_dir: Optional[Path] = None,
    throttle: Optional[LoginThrottle] = None,
) -> Starlette:
    """The console app. ``secret_key`` signs the session cookies (keep it across restarts)."""
    templates = Jinja2Templates(
        directory=str(templates_dir or HERE / "templates"), context_processors=[_common]
    )
    templates.env.filters.update({"ts": fmt_ts, "iso": iso, "state_label": state_label})
    templates.env.globals["STATES"] = STATES
    routes = [
        Route("/login", login_form, methods=["GET"], name="login_form"),
        Route("/login", login, methods=["POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/healthz", healthz, name="healthz"),
        Route("/events", event_stream, name="events"),
        *pages.routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=secret_key,
            session_cookie=SESSION_COOKIE,
            max_age=int(session_hours * 3600),
            same_site="lax",
            https_only=https_only,
        ),
        Middleware(Guard, store=store),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error})
    app.state.store = store
    app.state.ingest = ingest
    app.state.hub = hub
    app.state.templates = templates
    app.state.title = title
    app.state.throttle = throttle or LoginThrottle()
    return app
