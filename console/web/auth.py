"""Logins for the console: argon2 password hashes, the signed session cookie, CSRF tokens and the
guard that refuses anonymous requests.

- Passwords are stored as argon2id hashes (``argon2-cffi``); ``binwatch console user add`` writes
  them with :func:`hash_password`.
- The session is Starlette's signed cookie (``itsdangerous``): the user name, a fingerprint of the
  password hash (changing the password ends the other sessions) and the CSRF token.
- Every request but ``/login``, ``/healthz`` and ``/static/`` needs a logged-in user whose record
  still exists: a page redirects to the login form, anything else (an action, the event stream, an
  image) gets 401. The check is in one middleware (:class:`Guard`), so a new route is closed unless
  it is listed in :data:`PUBLIC`.
- Failed logins are throttled per user name and per client address (:class:`LoginThrottle`).
- Every POST carries the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``), else
  403; a POST whose ``Origin`` is another site is refused before that.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

__all__ = [
    "PUBLIC",
    "Guard",
    "LoginThrottle",
    "User",
    "checked_form",
    "csrf_token",
    "hash_password",
    "safe_next",
    "start_session",
    "verify_password",
]

PUBLIC = ("/login", "/healthz", "/static/")
ROLES = ("reviewer", "viewer")  # viewer: reads, cannot review
_DUMMY_HASH: Optional[str] = None


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (with its own salt and parameters)."""
    if not password:
        raise ValueError("the password is empty")
    return str(_hasher().hash(password))


def verify_password(password_hash: Optional[str], password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; with no hash (unknown user) the same work is
    done against a dummy hash, so the answer takes as long either way."""
    from argon2.exceptions import InvalidHashError, VerificationError

    global _DUMMY_HASH
    if password_hash is None:
        _DUMMY_HASH = _DUMMY_HASH or hash_password("not a password")
        password_hash, password = _DUMMY_HASH, password + "x"
        known = False
    else:
        known = True
    try:
        return bool(_hasher().verify(password_hash, password)) and known
    except (VerificationError, InvalidHashError):
        return False


def fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def can_review(self) -> bool:
        return self.role != "viewer"


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def checked_form(request: Request) -> FormData:
    """The POSTed form after its CSRF token was checked (403 when it is missing or wrong)."""
    form = await request.form(max_files=0, max_fields=64)
    sent = request.headers.get("x-csrf-token") or form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form


def start_session(request: Request, name: str, role: str, password_hash: str) -> None:
    """A new session for ``name`` (whatever was in the cookie before is dropped: no fixation)."""
    request.session.clear()
    request.session.update({"user": name, "fp": fingerprint(password_hash), "role": role})
    csrf_token(request)


def safe_next(target: Optional[str]) -> str:
    """Where to go after login: a path on this site only (never ``//host`` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


class LoginThrottle:
    """At most ``per_name`` failed logins for one user name, and ``per_client`` from one client
    address, within ``window_s``; past that, logins are refused (429) until the oldest failure ages
    out. A success clears the name's failures."""

    def __init__(
        self,
        per_name: int = 5,
        per_client: int = 20,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.limits = {"name": per_name, "client": per_client}
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._fails: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._fails.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            self._fails.pop(key, None)
        return times

    def wait_s(self, name: str, client: str) -> float:
        """Seconds until a login for ``name`` from ``client`` is allowed again (0: allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in (("name", name), ("client", client)):
                times = self._recent(key, now)
                if len(times) >= self.limits[key[0]]:
                    wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, name: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._fails) >= self.max_keys:  # a flood of names: forget the oldest entries
                for key in list(self._fails)[: self.max_keys // 10]:
                    del self._fails[key]
            for key in (("name", name), ("client", client)):
                self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop(("name", name), None)


class Guard:
    """ASGI middleware (inside the session middleware): puts the logged-in :class:`User` on
    ``request.state.user``; refuses anonymous requests to anything not in :data:`PUBLIC`, and POSTs
    from another origin."""

    def __init__(self, app: ASGIApp, store: Any) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        user = await self._user(request)
        scope.setdefault("state", {})["user"] = user
        path = scope["path"]
        public = path in PUBLIC[:2] or path.startswith(PUBLIC[2])
        response: Optional[Response] = None
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            response = PlainTextResponse("cross-origin request refused", 403)
        elif user is None and not public:
            response = _anonymous(request)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _user(self, request: Request) -> Optional[User]:
        name = request.session.get("user")
        if not isinstance(name, str):
            return None
        try:
            record = await run_in_threadpool(self.store.user, name)
        except Exception:
            log.exception("cannot read user %r from the store", name)
            return None
        if record is None:
            return None
        password_hash, role = record
        if not hmac.compare_digest(str(request.session.get("fp", "")), fingerprint(password_hash)):
            return None  # the password changed since this login
        return User(name, role)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def _anonymous(request: Request) -> Response:
    wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
    if wants_page:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
    return PlainTextResponse("login required", 401, headers={"WWW-Authenticate": 'Session realm="console"'})
