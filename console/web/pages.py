"""The console's pages and actions: the alert feed, one alert (image, distribution, history, review),
the fleet, and the fragments the pages' script fetches when an event arrives.

Handlers that only read are plain functions (Starlette runs them in its thread pool, where the
store's blocking calls belong); the review action is async for the form and hands the store and the
MQTT publish to the thread pool.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Optional

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.web.auth import checked_form
from console.web.views import DECISIONS, FeedFilters, distribution_bars, fleet_row, state_label

log = logging.getLogger(__name__)

__all__ = ["ReviewError", "build_review", "routes"]

MAX_LIMIT = 500


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status)


def _limit(request: Request) -> int:
    try:
        return max(1, min(MAX_LIMIT, int(request.query_params.get("limit", "50"))))
    except ValueError:
        return 50


def _alert_row(request: Request) -> Any:
    row = request.app.state.store.alert(str(request.path_params["alert_id"]))
    if row is None:
        raise HTTPException(404, "no such alert (it may not have arrived yet)")
    return row


def feed(request: Request) -> Response:
    """``GET /``: the newest alerts (filters: site, device, state, bin), updated live."""
    filters = FeedFilters.from_query(request.query_params)
    store = request.app.state.store
    limit = _limit(request)
    rows = store.alerts(**filters.store_kwargs(), limit=limit)
    devices = store.devices()
    return _render(
        request,
        "feed.html",
        {
            "page": "feed",
            "rows": rows,
            "filters": filters,
            "older": filters.older(rows) if len(rows) >= limit else None,
            "sites": sorted({d.site for d in devices} | {r.alert.site for r in rows}),
            "devices": sorted({d.device for d in devices} | {r.alert.device for r in rows}),
        },
    )


def feed_rows(request: Request) -> Response:
    """``GET /feed/rows``: the feed table's rows alone (a page reloads them after a resync)."""
    filters = FeedFilters.from_query(request.query_params)
    rows = request.app.state.store.alerts(**filters.store_kwargs(), limit=_limit(request))
    return _render(request, "_feed_rows.html", {"rows": rows})


def feed_row(request: Request) -> Response:
    """``GET /feed/row/<alert_id>``: one row when the alert passes the filters given, else 204."""
    filters = FeedFilters.from_query(request.query_params)
    row = request.app.state.store.alert(str(request.path_params["alert_id"]))
    if row is None or not filters.matches(row):
        return Response(status_code=204)
    return _render(request, "_feed_rows.html", {"rows": [row]})


def alert_page(request: Request, error: str = "", status: int = 200) -> Response:
    """``GET /alerts/<alert_id>``: the snapshot, the distribution, the fields, history, actions."""
    row = _alert_row(request)
    a = row.alert
    return _render(
        request,
        "alert.html",
        {
            "page": "alert",
            "row": row,
            "a": a,
            "bars": distribution_bars(dict(a.distribution), a.expected_qty, a.predicted_qty),
            "reviews": request.app.state.store.reviews(a.alert_id),
            "error": error,
        },
        status,
    )


def history(request: Request) -> Response:
    """``GET /alerts/<alert_id>/history``: the review history and state (after a review event)."""
    row = _alert_row(request)
    reviews = request.app.state.store.reviews(row.alert.alert_id)
    return _render(request, "_history.html", {"row": row, "reviews": reviews})


def snapshot(request: Request) -> Response:
    """``GET /alerts/<alert_id>/snapshot``: the alert's JPEG from the image store (404 until it came)."""
    data = request.app.state.store.snapshot(str(request.path_params["alert_id"]))
    if data is None:
        raise HTTPException(404, "no snapshot for this alert (yet)")
    return Response(bytes(data), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def fleet(request: Request) -> Response:
    """``GET /fleet``: every device seen, online state, model and update state, fps, outbox."""
    return _render(request, "fleet.html", {"page": "fleet", "devices": _fleet(request)})


def fleet_rows(request: Request) -> Response:
    return _render(request, "_fleet_rows.html", {"devices": _fleet(request)})


def _fleet(request: Request) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    devices = request.app.state.store.devices()
    return [fleet_row(d, now) for d in sorted(devices, key=lambda d: (d.site, d.device))]


class ReviewError(ValueError):
    """A review form that cannot be recorded; the message says what to fix."""


def build_review(alert: Any, reviewer: str, decision: Any, actual_qty: Any, note: Any) -> Any:
    """The :class:`contract.messages.Review` of ``alert`` from the form's values (ReviewError when a
    value is missing or wrong)."""
    from contract import Review

    if decision not in DECISIONS:
        raise ReviewError("choose one of: mismatch confirmed, false alarm, can't tell")
    qty: Optional[int] = None
    if decision == "confirmed":
        text = str(actual_qty or "").strip()
        if not text.isdigit() or int(text) > 1_000_000:
            raise ReviewError("a confirmed mismatch needs the actual count: a whole number, 0 or more")
        qty = int(text)
    note_text = str(note or "").strip()
    if len(note_text) > 1024:
        raise ReviewError(f"the note is {len(note_text)} characters long; keep it under 1024")
    try:
        return Review(
            alert_id=alert.alert_id,
            site=alert.site,
            device=alert.device,
            camera=alert.camera,
            bin_id=alert.bin_id,
            event_id=alert.event_id,
            decision=decision,
            actual_qty=qty,
            reviewer=reviewer,
            note=note_text,
            ts=datetime.now(timezone.utc),
        )
    except ValueError as e:
        raise ReviewError(f"the review is not valid: {e}") from e


async def review(request: Request) -> Response:
    """``POST /alerts/<alert_id>/review``: record the review (who, when) in the store, publish it on
    MQTT (``alert/review``), and go back to the alert page."""
    user = request.state.user
    form = await checked_form(request)
    if not user.can_review:
        raise HTTPException(403, f"user {user.name!r} may view but not review (role {user.role!r})")
    state = request.app.state
    row = await run_in_threadpool(_alert_row, request)
    try:
        rev = build_review(
            row.alert, user.name, form.get("decision"), form.get("actual_qty"), form.get("note")
        )
    except ReviewError as e:
        return await run_in_threadpool(alert_page, request, str(e), 400)
    await run_in_threadpool(state.store.add_review, rev)
    try:
        published = await run_in_threadpool(state.ingest.publish_review, rev)
    except Exception:
        log.exception("publishing the review of %s failed", rev.alert_id)
        published = False
    log.info("%s reviewed %s: %s %s", user.name, rev.alert_id, rev.decision, rev.actual_qty)
    state.hub.publish("review", {"alert_id": rev.alert_id, "state": rev.decision})
    what = state_label(rev.decision) + (
        f", actual count {rev.actual_qty}" if rev.actual_qty is not None else ""
    )
    request.session["flash"] = (
        f"Review recorded: {what}."
        if published
        else f"Review recorded: {what}. Not yet published on MQTT (no broker connection); "
        "it is sent when the console reconnects."
    )
    return RedirectResponse(f"/alerts/{rev.alert_id}", 303)


def routes() -> list[Any]:
    from starlette.routing import Route

    return [
        Route("/", feed, name="feed"),
        Route("/feed/rows", feed_rows, name="feed_rows"),
        Route("/feed/row/{alert_id:uuid}", feed_row, name="feed_row"),
        Route("/alerts/{alert_id:uuid}", alert_page, name="alert"),
        Route("/alerts/{alert_id:uuid}/history", history, name="history"),
        Route("/alerts/{alert_id:uuid}/snapshot", snapshot, name="snapshot"),
        Route("/alerts/{alert_id:uuid}/review", review, methods=["POST"], name="review"),
        Route("/fleet", fleet, name="fleet"),
        Route("/fleet/rows", fleet_rows, name="fleet_rows"),
    ]
