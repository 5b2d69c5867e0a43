"""ConsoleStore on SQLite and on a real PostgreSQL server (tests/console/postgres.py): dedupe,
snapshots before and after their alert, reviews, devices and wills, counters, users, export rows,
concurrent writers and readers, reopening."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from console.images import FolderImages
from console.store import SNAPSHOT_SHA256, ConsoleStore
from console.store import schema as t
from contract.messages import ModelReported, Stats, Status
from contract.reviews import Review
from tests.agent.mqtt_helpers import make_alert
from tests.console.postgres import PostgresServer, postgres_server  # noqa: F401 (fixture)

JPEG = b"\xff\xd8\xff\xe0" + b"binwatch test jpeg" * 10 + b"\xff\xd9"
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def snap(data: bytes = JPEG) -> dict[str, Any]:
    return {"uri": "file:///snap.jpg", "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def review(alert: Any, decision: str = "confirmed", qty: int | None = 2, **kw: Any) -> Review:
    fields: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "site": alert.site,
        "device": alert.device,
        "camera": alert.camera,
        "bin_id": alert.bin_id,
        "decision": decision,
        "actual_qty": qty if decision == "confirmed" else None,
        "reviewer": "ann",
        "ts": T0,
    }
    fields.update(kw)
    return Review(**fields)


def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'console.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return db_url(request, tmp_path)


@pytest.fixture()
def store(url: str, tmp_path: Path) -> Iterator[ConsoleStore]:
    s = ConsoleStore.open(url, FolderImages(tmp_path / "images"))
    try:
        yield s
    finally:
        s.close()


def test_alert_dedupe_keeps_the_first_copy(store: ConsoleStore) -> None:
    a = make_alert(seq=1)
    assert store.add_alert(a, T0) is True
    again = a.model_copy(update={"seq": 9, "is_historical": True})
    assert store.add_alert(again) is False
    row = store.alert(a.alert_id)
    assert row is not None and row.alert == a and row.alert.seq == 1
    assert row.received_ts == T0 and row.state == "new" and row.review is None and not row.has_snapshot
    assert store.alert(make_alert().alert_id) is None
    assert len(store.alerts()) == 1


def test_snapshot_after_alert_is_checked_against_its_sha256(store: ConsoleStore) -> None:
    a = make_alert(snapshot=snap())
    store.add_alert(a)
    with pytest.raises(ValueError, match="hashes to"):
        store.add_snapshot(a.alert_id, JPEG + b"x")
    assert store.snapshot(a.alert_id) is None and not store.alert(a.alert_id).has_snapshot
    assert store.add_snapshot(a.alert_id, JPEG) is True
    assert store.add_snapshot(a.alert_id, JPEG) is False  # a re-delivery
    assert store.snapshot(a.alert_id) == JPEG and store.alert(a.alert_id).has_snapshot
    b = make_alert(snapshot={**snap(), "size": 3})  # the size is checked too
    store.add_alert(b)
    with pytest.raises(ValueError, match="bytes"):
        store.add_snapshot(b.alert_id, JPEG)
    c = make_alert()  # names no snapshot: takes none from the ingest (require_sha256)
    store.add_alert(c)
    with pytest.raises(ValueError, match="names no snapshot"):
        store.add_snapshot(c.alert_id, JPEG, require_sha256=True)
    assert store.add_snapshot(c.alert_id, JPEG) is True  # a caller that knows better may
    with pytest.raises(ValueError, match="UUID"):
        store.add_snapshot("../../etc/passwd", JPEG)
    assert store.invalid_counts() == {}  # refusals are the caller's to count


def test_snapshot_before_its_alert_is_kept_and_matched(store: ConsoleStore) -> None:
    a = make_alert(snapshot=snap())
    assert store.add_snapshot(a.alert_id, JPEG) is True
    assert store.alert(a.alert_id) is None and store.snapshot(a.alert_id) == JPEG
    store.add_alert(a)
    assert store.alert(a.alert_id).has_snapshot
    # an early snapshot that its alert disowns is dropped and counted
    b = make_alert(snapshot=snap())
    store.add_snapshot(b.alert_id, b"\xff\xd8 not the one")
    store.add_alert(b)
    assert not store.alert(b.alert_id).has_snapshot and store.snapshot(b.alert_id) is None
    assert store.invalid_counts() == {SNAPSHOT_SHA256: 1}
    assert store.add_snapshot(b.alert_id, JPEG) is True  # the right one still gets in
    c = make_alert()  # an early JPEG for an alert that names no snapshot is dropped too
    store.add_snapshot(c.alert_id, JPEG)
    store.add_alert(c)
    assert not store.alert(c.alert_id).has_snapshot and store.invalid_counts() == {SNAPSHOT_SHA256: 2}


def test_orphan_snapshots_are_pruned_after_a_while(store: ConsoleStore) -> None:
    kept, orphan = make_alert(snapshot=snap()), make_alert(snapshot=snap())
    store.add_alert(kept)
    store.add_snapshot(kept.alert_id, JPEG)
    store.add_snapshot(orphan.alert_id, JPEG)  # its alert never comes
    assert store.prune_orphan_snapshots() == 0  # too young
    assert store.prune_orphan_snapshots(older_than=timedelta(seconds=-1)) == 1
    assert store.snapshot(orphan.alert_id) is None and store.snapshot(kept.alert_id) == JPEG
    store.add_alert(orphan)  # comes after all: the JPEG is gone, a new one may come
    assert not store.alert(orphan.alert_id).has_snapshot
    assert store.add_snapshot(orphan.alert_id, JPEG) is True


def test_alerts_filter_order_and_paging(store: ConsoleStore) -> None:
    made = []
    for i in range(6):
        a = make_alert(site="s1" if i % 2 else "s2", device=f"d{i % 3}", bin_id=f"b{i}")
        store.add_alert(a, T0 + timedelta(seconds=i))
        made.append(a)
    ids = [r.alert.alert_id for r in store.alerts()]
    assert ids == [a.alert_id for a in reversed(made)]
    assert [r.alert.alert_id for r in store.alerts(site="s1")] == [
        made[5].alert_id,
        made[3].alert_id,
        made[1].alert_id,
    ]
    assert [r.alert.alert_id for r in store.alerts(device="d0")] == [made[3].alert_id, made[0].alert_id]
    assert [r.alert.alert_id for r in store.alerts(bin_id="b4")] == [made[4].alert_id]
    page1 = store.alerts(limit=4)
    page2 = store.alerts(limit=4, before=page1[-1].received_ts)
    assert [r.alert.alert_id for r in page1 + page2] == ids
    store.add_review(review(made[2], "false_alarm"))
    assert [r.alert.alert_id for r in store.alerts(state="false_alarm")] == [made[2].alert_id]
    assert len(store.alerts(state="new")) == 5
    assert store.count_alerts() == 6 and store.count_alerts(state="new") == 5
    assert store.count_alerts(site="s1", device="d0") == 1 and store.count_alerts(bin_id="nope") == 0
    with pytest.raises(ValueError, match="state"):
        store.alerts(state="bogus")


def test_reviews_keep_history_latest_wins_and_publish_state(store: ConsoleStore) -> None:
    a = make_alert()
    with pytest.raises(KeyError):
        store.add_review(review(a))
    store.add_alert(a)
    with pytest.raises(ValueError, match="names"):
        store.add_review(review(a, device="other"))
    first = store.add_review(review(a, "confirmed", 1, ts=T0))
    assert first.published is False and first.ts == T0 and first.actual_qty == 1
    store.add_review(review(a, "cant_tell", note="blurry", ts=T0 + timedelta(minutes=1)))
    hist = store.reviews(a.alert_id)
    assert [r.decision for r in hist] == ["confirmed", "cant_tell"] and hist[1].note == "blurry"
    row = store.alert(a.alert_id)
    assert row.state == "cant_tell" and row.review == hist[1]
    pending = store.unpublished_reviews()
    assert [(r.alert_id, r.decision) for r in pending] == [
        (a.alert_id, "confirmed"),
        (a.alert_id, "cant_tell"),
    ]
    store.mark_review_published(a.alert_id, T0)
    assert [r.decision for r in store.unpublished_reviews()] == ["cant_tell"]
    assert [r.published for r in store.reviews(a.alert_id)] == [True, False]


def status(state: str, session: int) -> Status:
    return Status(state=state, session=session, ts=T0, agent_version="1.0")


def test_devices_status_will_stats_and_model(store: ConsoleStore) -> None:
    store.update_device("s1", "d1", status=status("online", 5), seen=T0)
    store.update_device("s1", "d1", status=status("offline", 4), seen=T0 - timedelta(hours=1))  # stale will
    (d,) = store.devices()
    assert (d.site, d.device, d.online, d.session, d.last_seen) == ("s1", "d1", True, 5, T0)
    assert d.status == status("online", 5) and d.stats is None and d.model is None
    stats = Stats(ts=T0, uptime_s=1.0, fps=2.0)
    model = ModelReported(version=3, state="active", ts=T0)
    store.update_device("s1", "d1", stats=stats, model=model, seen=T0 + timedelta(seconds=5))
    store.update_device("s1", "d1", status=status("offline", 5))  # the will of the current session
    (d,) = store.devices()
    assert d.online is False and d.session == 5 and d.stats == stats and d.model == model
    assert d.last_seen == T0 + timedelta(seconds=5)
    store.update_device("s0", "d9", seen=T0)
    first = store.devices()[0]
    assert (first.site, first.device, first.online, first.status) == ("s0", "d9", None, None)


def test_invalid_counts_and_users(store: ConsoleStore) -> None:
    assert store.invalid_counts() == {}
    store.count_invalid("not_json")
    store.count_invalid("not_json", 4)
    store.count_invalid("oversized")
    assert store.invalid_counts() == {"not_json": 5, "oversized": 1}
    assert store.user("ann") is None
    store.add_user("ann", "hash1", role="admin")
    with pytest.raises(ValueError, match="exists"):
        store.add_user("ann", "hash2")
    assert store.user("ann") == ("hash1", "admin")
    store.add_user("bob", "hash3")
    assert store.user("bob") == ("hash3", "reviewer")


def test_reviewed_for_export_picks_confirmed_and_false_alarms_with_snapshots(store: ConsoleStore) -> None:
    alerts = [make_alert(snapshot=snap()) for _ in range(5)]
    for a in alerts:
        store.add_alert(a)
    for a in alerts[:4]:
        store.add_snapshot(a.alert_id, JPEG)
    store.add_review(review(alerts[0], "confirmed", 7))
    store.add_review(review(alerts[1], "false_alarm"))
    store.add_review(review(alerts[2], "cant_tell"))
    store.add_review(review(alerts[3], "confirmed", 1))
    store.add_review(review(alerts[3], "cant_tell"))  # the latest review wins: left out
    store.add_review(review(alerts[4], "confirmed", 2))  # no snapshot: left out
    got = store.reviewed_for_export()
    assert [(row.alert.alert_id, rv.decision, rv.actual_qty) for row, rv in got] == [
        (alerts[0].alert_id, "confirmed", 7),
        (alerts[1].alert_id, "false_alarm", None),
    ]


def test_concurrent_writers_and_readers(store: ConsoleStore) -> None:
    errors: list[BaseException] = []
    n_writers, per = 4, 40

    def write(w: int) -> None:
        try:
            for i in range(per):
                a = make_alert(device=f"d{w}", seq=i, snapshot=snap())
                assert store.add_alert(a)
                store.add_snapshot(a.alert_id, JPEG)
                store.update_device("s1", f"d{w}", status=status("online", i), seen=T0 + timedelta(seconds=i))
                store.count_invalid("x")
        except BaseException as e:  # reported below
            errors.append(e)

    def read(stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                store.alerts(limit=20)
                store.devices()
        except BaseException as e:
            errors.append(e)

    stop = threading.Event()
    readers = [threading.Thread(target=read, args=(stop,)) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(w,)) for w in range(n_writers)]
    for th in readers + writers:
        th.start()
    for th in writers:
        th.join()
    stop.set()
    for th in readers:
        th.join()
    assert errors == []
    assert len(store.alerts(limit=1000)) == n_writers * per
    assert all(r.has_snapshot for r in store.alerts(limit=1000))
    assert store.invalid_counts() == {"x": n_writers * per}
    assert sorted((d.device, d.session) for d in store.devices()) == [
        (f"d{w}", per - 1) for w in range(n_writers)
    ]


def test_reopen_keeps_everything_and_refuses_a_newer_schema(url: str, tmp_path: Path) -> None:
    images = FolderImages(tmp_path / "images")
    s = ConsoleStore.open(url, images)
    a = make_alert(snapshot=snap())
    s.add_alert(a)
    s.add_snapshot(a.alert_id, JPEG)
    s.add_review(review(a))
    assert s.schema_version() == t.SCHEMA_VERSION
    s.close()
    s = ConsoleStore.open(url, images)
    row = s.alert(a.alert_id)
    assert row is not None and row.state == "confirmed" and s.snapshot(a.alert_id) == JPEG
    with s.batch() as b:
        b.conn.execute(update(t.meta).values(value=str(t.SCHEMA_VERSION + 1)))
    s.close()
    with pytest.raises(RuntimeError, match="newer"):
        ConsoleStore.open(url, images)


def test_open_refuses_an_unknown_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        ConsoleStore.open("mysql://x/y", FolderImages(tmp_path))
