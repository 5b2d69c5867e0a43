"""The console's routes through Starlette's TestClient, on the real store (SQLite in tmp_path): login
required everywhere, CSRF refused, reviews recorded with who and when and handed to the publisher,
the live event stream, fragments and the broker banner. The MQTT side is :class:`FakeIngest` (a
fake at the ingest seam); the real ingest and broker are in test_console_e2e.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import skip_without_console_extra

skip_without_console_extra(any_of=("httpx2", "httpx"))  # TestClient: httpx2 (httpx for older starlette)

from starlette.testclient import TestClient  # noqa: E402

from console.images import FolderImages  # noqa: E402
from console.store import ConsoleStore  # noqa: E402
from console.web.app import make_app  # noqa: E402
from console.web.auth import hash_password, safe_next  # noqa: E402
from console.web.events import EventHub  # noqa: E402
from contract import Review  # noqa: E402
from tests.agent.mqtt_helpers import make_alert  # noqa: E402
from tests.console.postgres import postgres_server  # noqa: E402, F401  (the fixture)

JPEG = b"\xff\xd8\xff\xe0" + b"binwatch web test" * 8 + b"\xff\xd9"
PASSWORD = "correct horse battery"


class FakeIngest:
    """Fake of console.ingest.Ingest at the seam the web app uses: broker state and publish_review."""

    def __init__(self) -> None:
        self.connected = True
        self.last_error = ""
        self.published: list[Review] = []

    def publish_review(self, review: Review) -> bool:
        if not self.connected:
            return False
        self.published.append(review)
        return True


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ConsoleStore]:
    s = ConsoleStore.open(f"sqlite:///{tmp_path / 'console.db'}", FolderImages(tmp_path / "images"))
    s.add_user("ana", hash_password(PASSWORD))
    s.add_user("vic", hash_password(PASSWORD), role="viewer")
    yield s
    s.close()


@pytest.fixture()
def ingest() -> FakeIngest:
    return FakeIngest()


@pytest.fixture()
def hub() -> EventHub:
    return EventHub(keepalive_s=0.5)


@pytest.fixture()
def client(store: ConsoleStore, ingest: FakeIngest, hub: EventHub) -> Iterator[TestClient]:
    app = make_app(store, ingest, hub, secret_key="k" * 48)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as c:
        yield c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def login(client: TestClient, name: str = "ana", password: str = PASSWORD) -> Any:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": name, "password": password, "csrf": token, "next": "/"})


def test_anonymous_is_refused_everywhere(client: TestClient, store: ConsoleStore) -> None:
    a = make_alert()
    store.add_alert(a)
    store.add_snapshot(a.alert_id, JPEG)
    page = client.get("/fleet", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Ffleet"
    for path in ("/", "/feed/rows", f"/alerts/{a.alert_id}", f"/alerts/{a.alert_id}/snapshot", "/events"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert JPEG not in r.content
    r = client.post(f"/alerts/{a.alert_id}/review", data={"decision": "false_alarm", "csrf": "x"})
    assert r.status_code == 401
    assert store.reviews(a.alert_id) == []
    assert client.get("/healthz").text == "ok"
    assert client.get("/static/console.css").status_code == 200


def test_login_checks_the_password_and_starts_a_session(client: TestClient) -> None:
    bad = login(client, password="wrong password")
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    assert login(client, name="nobody").status_code == 401
    ok = login(client)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    feed = client.get("/")
    assert feed.status_code == 200 and "Mismatch alerts" in feed.text and "ana" in feed.text
    assert feed.headers["content-security-policy"].startswith("default-src 'self'")
    token = csrf_of(feed.text)
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert client.get("/feed/rows").status_code == 401


def test_login_without_csrf_is_refused(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"username": "ana", "password": PASSWORD})
    assert r.status_code == 403
    assert client.get("/feed/rows").status_code == 401


def test_review_is_recorded_with_who_and_when_and_published(
    client: TestClient, store: ConsoleStore, ingest: FakeIngest
) -> None:
    a = make_alert(bin_id="B-77", expected_qty=4, predicted_qty=3, event_id="ev-1")
    store.add_alert(a)
    login(client)
    page = client.get(f"/alerts/{a.alert_id}")
    assert page.status_code == 200 and "Bin B-77" in page.text and "Not reviewed yet" in page.text
    token = csrf_of(page.text)
    r = client.post(
        f"/alerts/{a.alert_id}/review",
        data={"csrf": token, "decision": "confirmed", "actual_qty": "3", "note": "one missing"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/alerts/{a.alert_id}"
    (row,) = store.reviews(a.alert_id)
    assert (row.decision, row.actual_qty, row.reviewer, row.note) == ("confirmed", 3, "ana", "one missing")
    (sent,) = ingest.published
    assert (sent.alert_id, sent.site, sent.device, sent.bin_id, sent.event_id) == (
        a.alert_id,
        "s1",
        "d1",
        "B-77",
        "ev-1",
    )
    assert sent.reviewer == "ana" and sent.ts.tzinfo is not None
    after = client.get(f"/alerts/{a.alert_id}").text
    assert "Review recorded: mismatch confirmed, actual count 3." in after
    assert "one missing" in after and store.alert(a.alert_id).state == "confirmed"
    # a second reviewer's "false alarm" becomes the latest; the history keeps both
    client.post(f"/alerts/{a.alert_id}/review", data={"csrf": token, "decision": "false_alarm"})
    assert [r.decision for r in store.reviews(a.alert_id)] == ["confirmed", "false_alarm"]
    assert store.alert(a.alert_id).state == "false_alarm"


def test_review_without_or_with_wrong_csrf_is_refused(client: TestClient, store: ConsoleStore) -> None:
    a = make_alert()
    store.add_alert(a)
    login(client)
    url = f"/alerts/{a.alert_id}/review"
    assert client.post(url, data={"decision": "false_alarm"}).status_code == 403
    assert client.post(url, data={"decision": "false_alarm", "csrf": "forged"}).status_code == 403
    token = csrf_of(client.get("/").text)
    other_site = client.post(
        url, data={"decision": "false_alarm", "csrf": token}, headers={"Origin": "http://evil.example"}
    )
    assert other_site.status_code == 403
    assert store.reviews(a.alert_id) == []


def test_bad_review_forms_record_nothing(client: TestClient, store: ConsoleStore, ingest: FakeIngest) -> None:
    a = make_alert()
    store.add_alert(a)
    login(client)
    token = csrf_of(client.get("/").text)
    url = f"/alerts/{a.alert_id}/review"
    for data in (
        {"decision": "confirmed"},
        {"decision": "confirmed", "actual_qty": "-1"},
        {"decision": "confirmed", "actual_qty": "2.5"},
        {"decision": "maybe"},
        {"decision": "cant_tell", "note": "x" * 2000},
    ):
        r = client.post(url, data={"csrf": token, **data})
        assert r.status_code == 400, data
    assert "needs the actual count" in client.post(url, data={"csrf": token, "decision": "confirmed"}).text
    assert store.reviews(a.alert_id) == [] and ingest.published == []
    unknown = client.post("/alerts/00000000-0000-4000-8000-000000000000/review", data={"csrf": token})
    assert unknown.status_code == 404


def test_a_viewer_cannot_review(client: TestClient, store: ConsoleStore) -> None:
    a = make_alert()
    store.add_alert(a)
    login(client, "vic")
    page = client.get(f"/alerts/{a.alert_id}").text
    assert "can view alerts but not review" in page and 'id="review-form"' not in page
    r = client.post(f"/alerts/{a.alert_id}/review", data={"csrf": csrf_of(page), "decision": "cant_tell"})
    assert r.status_code == 403 and store.reviews(a.alert_id) == []


def test_review_while_the_broker_is_down_is_stored_and_said_unpublished(
    client: TestClient, store: ConsoleStore, ingest: FakeIngest
) -> None:
    a = make_alert()
    store.add_alert(a)
    ingest.connected, ingest.last_error = False, "connection refused"
    login(client)
    page = client.get("/").text
    assert 'id="broker-banner"' in page and "connection refused" in page
    assert re.search(r'id="broker-banner"[^>]*hidden', page) is None
    client.post(f"/alerts/{a.alert_id}/review", data={"csrf": csrf_of(page), "decision": "cant_tell"})
    assert store.reviews(a.alert_id)[0].decision == "cant_tell"
    assert "Not yet published on MQTT" in client.get(f"/alerts/{a.alert_id}").text
    ingest.connected = True
    assert re.search(r'id="broker-banner"[^>]*hidden', client.get("/").text)


def test_feed_filters_fragments_and_snapshot(client: TestClient, store: ConsoleStore) -> None:
    a = make_alert(bin_id="A-1")
    b = make_alert(device="d2", bin_id="B-2")
    store.add_alert(a)
    store.add_alert(b)
    store.add_snapshot(a.alert_id, JPEG)
    store.count_invalid("alert: bad json", 2)
    login(client)
    everything = client.get("/").text
    assert "A-1" in everything and "B-2" in everything and "alert: bad json: 2" in everything
    only_d2 = client.get("/?device=d2").text
    assert "B-2" in only_d2 and ">A-1<" not in only_d2
    assert client.get(f"/feed/row/{a.alert_id}?device=d2").status_code == 204
    row = client.get(f"/feed/row/{a.alert_id}?device=d1")
    assert row.status_code == 200 and f"/alerts/{a.alert_id}/snapshot" in row.text
    assert "no image yet" in client.get(f"/feed/row/{b.alert_id}").text
    snap = client.get(f"/alerts/{a.alert_id}/snapshot")
    assert snap.content == JPEG and snap.headers["content-type"] == "image/jpeg"
    assert client.get(f"/alerts/{b.alert_id}/snapshot").status_code == 404
    assert client.get("/alerts/not-a-uuid").status_code == 404
    page = client.get(f"/alerts/{a.alert_id}").text
    assert page.count('<g class="bar') == 3 and "90.0% predicted" in page and "5.0% expected" in page


def test_event_stream_delivers_hub_events(client: TestClient, hub: EventHub) -> None:
    login(client)
    with client.stream("GET", "/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines).startswith("retry:")
        hub.publish("alert", {"alert_id": "abc"})
        got = [next(lines) for _ in range(3)]
        assert got[:2] == ["", "event: alert"] and got[2] == 'data: {"alert_id":"abc"}'
        hub.close()


def test_password_change_ends_other_sessions(client: TestClient, store: ConsoleStore) -> None:
    login(client)
    assert client.get("/feed/rows").status_code == 200
    with store.batch() as b:  # what a password reset does: a new hash for the same user
        from console.store import schema

        b.conn.execute(schema.users.update().values(password_hash=hash_password("another password")))
    assert client.get("/feed/rows").status_code == 401


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/fleet", "/fleet"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil", "/"),
        (None, "/"),
    ],
)
def test_login_redirects_only_to_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_fleet_page_shows_devices_and_updates(client: TestClient, store: ConsoleStore) -> None:
    from datetime import datetime, timezone

    from contract.messages import ModelReported, Stats, Status

    now = datetime.now(timezone.utc)
    store.update_device(
        "dc1",
        "jet-3",
        status=Status(state="offline", session=2, ts=now, agent_version="0.1.0"),
        stats=Stats(ts=now, uptime_s=5.0, fps=12.5, outbox_depth=41),
        model=ModelReported(version=8, state="failed", detail="golden set differs", ts=now),
        seen=now,
    )
    login(client)
    page = client.get("/fleet").text
    assert "dc1/jet-3" in page and "v8 failed: golden set differs" in page
    assert '<span class="pill offline">offline</span>' in page and ">41<" in page and "12.5" in page
    assert "built-in method" not in page
    assert client.get("/fleet/rows").text.count('class="device-row') == 1


def test_feed_pages_back_and_a_new_alert_stays_off_an_older_page(
    client: TestClient, store: ConsoleStore
) -> None:
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    alerts = [make_alert(bin_id=f"P-{i}") for i in range(5)]
    for i, a in enumerate(alerts):
        store.add_alert(a, received_ts=t0 + timedelta(minutes=i))
    login(client)
    first = client.get("/?limit=2").text
    assert "P-4" in first and "P-3" in first and "P-2" not in first
    older = re.search(r'href="/\?([^"]+)" id="older"', first)
    assert older and "before=" in older.group(1)
    second = client.get("/?limit=2&" + older.group(1).replace("&amp;", "&")).text
    assert "P-2" in second and "P-1" in second and "P-4" not in second and 'id="newest"' in second
    query = older.group(1).replace("&amp;", "&")
    assert client.get(f"/feed/row/{alerts[4].alert_id}?{query}").status_code == 204
    assert client.get(f"/feed/row/{alerts[1].alert_id}?{query}").status_code == 200


def test_failed_logins_are_throttled(store: ConsoleStore, ingest: FakeIngest, hub: EventHub) -> None:
    from console.web.auth import LoginThrottle

    now = [1000.0]
    throttle = LoginThrottle(per_name=3, per_client=5, window_s=60.0, clock=lambda: now[0])
    app = make_app(store, ingest, hub, secret_key="k" * 48, throttle=throttle)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as c:
        for _ in range(3):
            assert login(c, password="guess").status_code == 401
        refused = login(c)  # the right password, but the name is locked for now
        assert refused.status_code == 429 and "Too many failed logins. Try again in 60 s." in refused.text
        now[0] += 61
        assert login(c).status_code == 303
        c.cookies.clear()
        for i in range(5):  # many names from one address
            login(c, name=f"user{i}", password="guess")
        assert login(c, name="vic").status_code == 429


def test_review_on_postgresql(
    tmp_path: Path,
    postgres_server: Any,  # noqa: F811
    ingest: FakeIngest,
    hub: EventHub,
) -> None:
    """The same review path on the other database the console supports."""
    s = ConsoleStore.open(postgres_server.new_database(), FolderImages(tmp_path / "images"))
    try:
        s.add_user("ana", hash_password(PASSWORD))
        a = make_alert()
        s.add_alert(a)
        s.add_snapshot(a.alert_id, JPEG)
        with TestClient(make_app(s, ingest, hub, secret_key="k" * 48), follow_redirects=False) as c:
            assert login(c).status_code == 303
            token = csrf_of(c.get("/").text)
            data = {"csrf": token, "decision": "confirmed", "actual_qty": "0"}
            assert c.post(f"/alerts/{a.alert_id}/review", data=data).status_code == 303
            assert c.get(f"/alerts/{a.alert_id}/snapshot").content == JPEG
        (row,) = s.reviews(a.alert_id)
        assert (row.decision, row.actual_qty, row.reviewer) == ("confirmed", 0, "ana")
        assert s.alerts(state="confirmed")[0].alert.alert_id == a.alert_id
    finally:
        s.close()
