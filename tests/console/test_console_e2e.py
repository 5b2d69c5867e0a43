"""The web console end to end, as an operator uses it: a real mosquitto, ``binwatch console serve``
in a subprocess (real store, real ingest), a real headless Chromium driven by selenium.

Log in on the page; an alert and its JPEG published on MQTT appear in the open feed without a
reload, picture included; open it, review "mismatch confirmed, actual count 3"; restart the console:
the review is still there, and a paho subscriber saw it published on ``alert/review``. An anonymous
POST to the review action is refused.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import (  # noqa: F401  (browser: the fixture)
    ConsoleProcess,
    browser,
    click,
    css_text,
    make_jpeg,
    shown,
    skip_without_console_extra,
    text_of,
)

skip_without_console_extra()

from contract import Review, Snapshot  # noqa: E402
from contract.topics import Topics  # noqa: E402
from tests.agent.mqtt_helpers import Collector, PersistentMosquitto, make_alert, publish, wait_until  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402
from tests.hw import requires_mosquitto  # noqa: E402

pytestmark = pytest.mark.mqtt

PASSWORD = "operator password 1"


def start_console(tmp_path: Path, broker_url: str) -> ConsoleProcess:
    c = ConsoleProcess(tmp_path / "console", broker_url)
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    added = c.cli("user", "add", "ana", "--password-file", str(pw))
    assert added.returncode == 0, added.stderr
    c.start()
    return c


@pytest.fixture()
def console(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[ConsoleProcess]:
    c = start_console(tmp_path, mosquitto.url)
    yield c
    c.stop()


@pytest.fixture()
def persistent_broker(tmp_path: Path) -> Iterator[PersistentMosquitto]:
    """A broker that keeps sessions across a restart, so the test's subscriber cannot miss the
    review the console sends the moment it reconnects."""
    if requires_mosquitto.args[0]:
        pytest.skip(requires_mosquitto.kwargs["reason"])
    broker = PersistentMosquitto(tmp_path / "pbroker")
    broker.start()
    yield broker
    broker.stop()


def login(driver: Any, url: str, name: str = "ana", password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    assert "/login" in driver.current_url  # anonymous: sent to the login form
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    assert wait_until(lambda: driver.find_elements(By.ID, "feed-rows")), driver.page_source[:2000]


def publish_alert_with_snapshot(broker_url: str, jpeg: bytes, **kw: Any) -> Any:
    topics = Topics("s1", "d1")
    alert_id = kw.pop("alert_id", None) or make_alert().alert_id
    snap = Snapshot(
        uri=f"file:///var/lib/binwatch/snapshots/{alert_id}.jpg",
        sha256=hashlib.sha256(jpeg).hexdigest(),
        topic=topics.alert_snapshot(alert_id),
        size=len(jpeg),
    )
    alert = make_alert(alert_id=alert_id, snapshot=snap, **kw)
    publish(broker_url, topics.alert_mismatch, alert.to_json_bytes())
    publish(broker_url, topics.alert_snapshot(alert_id), jpeg)
    return alert


def anonymous_post(url: str) -> int:
    req = urllib.request.Request(url, data=b"decision=false_alarm&csrf=x", method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_alert_live_in_the_feed_reviewed_persisted_and_published(
    console: ConsoleProcess,
    mosquitto: Mosquitto,
    browser: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    reviews = Collector(mosquitto.url, "binwatch/v1/+/+/alert/review")
    try:
        login(browser, console.url)
        browser.execute_script("window.__sameDocument = 'yes';")  # gone if the page reloads
        assert wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#live.on")), "no event stream"

        jpeg = make_jpeg()
        alert = publish_alert_with_snapshot(
            mosquitto.url, jpeg, bin_id="B-0042", expected_qty=4, predicted_qty=3
        )
        row_css = f'#feed-rows tr[data-alert-id="{alert.alert_id}"]'
        img_css = row_css + " td.thumb img"
        loaded = (
            "var i = document.querySelector(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;"
        )
        assert wait_until(lambda: browser.execute_script(loaded, img_css)), browser.page_source[:3000]
        assert browser.execute_script("return window.__sameDocument;") == "yes"  # no reload happened
        row_text = css_text(browser, row_css)
        assert "B-0042" in row_text and "s1/d1" in row_text and "new" in row_text

        assert wait_until(lambda: click(browser, row_css + " td:nth-child(2) a"))
        assert wait_until(lambda: browser.find_elements(By.ID, "review-form"))
        assert browser.execute_script("return document.getElementById('snapshot').naturalWidth;") == 320
        browser.find_element(By.ID, "actual_qty").send_keys("3")
        browser.find_element(By.ID, "note").send_keys("one item missing")
        browser.find_element(By.ID, "confirm").click()
        assert wait_until(lambda: "mismatch confirmed" in text_of(browser, "history"))
        assert "Review recorded: mismatch confirmed, actual count 3." in browser.page_source

        got = wait_until(lambda: reviews.on("/alert/review"))
        assert got, "no review published on MQTT"
        topic, payload, _retain = got[-1]
        published = Review.parse(payload)
        assert topic == Topics("s1", "d1").alert_review
        assert (published.alert_id, published.decision, published.actual_qty) == (
            alert.alert_id,
            "confirmed",
            3,
        )
        assert (published.reviewer, published.note, published.bin_id) == ("ana", "one item missing", "B-0042")

        assert console.stop() == 0
        console.start()
        browser.refresh()  # same session cookie: the key survived the restart
        history = text_of(browser, "history")
        assert "mismatch confirmed" in history and "ana" in history and "one item missing" in history
        assert text_of(browser, "review-state") == "mismatch confirmed"

        assert anonymous_post(f"{console.url}/alerts/{alert.alert_id}/review") == 401
        assert anonymous_post(f"{console.url}/login") == 403  # no CSRF token
        assert "published" in history
    finally:
        reviews.close()


def test_serve_refuses_a_taken_port_and_user_add_refuses_a_duplicate(tmp_path: Path) -> None:
    import socket

    c = ConsoleProcess(tmp_path / "c", "mqtt://127.0.0.1:1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = c.cli("serve", "--broker", c.broker_url, "--port", str(port))
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr and "--port" in r.stderr
    pw = tmp_path / "pw"
    pw.write_text("long enough password\n")
    assert c.cli("user", "add", "bob", "--password-file", str(pw)).returncode == 0
    again = c.cli("user", "add", "bob", "--password-file", str(pw))
    assert again.returncode == 1 and "exists already" in again.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    bad = c.cli("user", "add", "eve", "--password-file", str(short))
    assert bad.returncode == 2 and "shorter than 8" in bad.stderr


def test_broker_outage_shows_the_banner_live_and_a_review_goes_out_after_it(
    tmp_path: Path,
    persistent_broker: PersistentMosquitto,
    browser: Any,  # noqa: F811
) -> None:

    mosquitto = persistent_broker
    console = start_console(tmp_path, mosquitto.url)
    reviews = Collector(mosquitto.url, "binwatch/v1/+/+/alert/review", persistent=True)
    try:
        outage(console, mosquitto, browser, reviews)
    finally:
        reviews.close()
        console.stop()


def outage(console: ConsoleProcess, mosquitto: Mosquitto, driver: Any, reviews: Collector) -> None:
    from selenium.webdriver.common.by import By

    alert = publish_alert_with_snapshot(mosquitto.url, make_jpeg())
    login(driver, console.url)
    css = f'#feed-rows tr[data-alert-id="{alert.alert_id}"]'
    assert wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, css) or driver.refresh())
    banner = driver.find_element(By.ID, "broker-banner")
    assert not banner.is_displayed()
    driver.execute_script("window.__sameDocument = 'yes';")
    mosquitto.stop()
    assert wait_until(banner.is_displayed), "no banner while the broker is down"
    assert "not connected to the MQTT broker" in banner.text
    assert driver.execute_script("return window.__sameDocument;") == "yes"

    driver.get(f"{console.url}/alerts/{alert.alert_id}")
    driver.find_element(By.ID, "false-alarm").click()
    assert wait_until(lambda: "Not yet published on MQTT" in driver.page_source)
    assert "not yet" in text_of(driver, "history")

    mosquitto.start()  # the subscriber's session (kept by the broker) gets what the console re-sends
    assert wait_until(lambda: not shown(driver, "broker-banner")), "banner stayed after the broker came back"
    got = wait_until(lambda: reviews.on("/alert/review"))
    assert got and Review.parse(got[-1][1]).decision == "false_alarm"
    assert wait_until(
        lambda: "published" in text_of(driver, "history") and "not yet" not in text_of(driver, "history")
    )


def test_an_open_page_goes_to_the_login_form_when_its_login_is_gone(
    console: ConsoleProcess,
    browser: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, console.url)
    browser.get(console.url + "/fleet")
    assert wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#live.on"))
    browser.delete_all_cookies()  # the login expired (or the key was replaced)
    assert console.stop() == 0  # the stream breaks; the page's reconnect is refused (401)
    console.start()
    assert wait_until(lambda: "/login?next=%2Ffleet" in browser.current_url), browser.current_url
    assert browser.find_elements(By.ID, "username")


def test_fleet_and_a_late_snapshot_update_live(
    console: ConsoleProcess,
    mosquitto: Mosquitto,
    browser: Any,  # noqa: F811
) -> None:
    from datetime import datetime, timezone

    from contract import ModelRef, ModelReported, Stats, Status

    login(browser, console.url)
    browser.get(console.url + "/fleet")
    assert wait_until(
        lambda: shown(browser, "fleet-empty") and "live updates: connected" in css_title(browser)
    )
    browser.execute_script("window.__sameDocument = 'yes';")
    t, now = Topics("s1", "d1"), datetime.now(timezone.utc)
    model = ModelRef(name="bins", version=7, sha256="a" * 64, precision="int8", backend="onnxruntime-cpu")
    publish(
        mosquitto.url,
        t.status,
        Status(state="online", session=4, ts=now, agent_version="0.1.0", model=model).to_json_bytes(),
        retain=True,
    )
    publish(mosquitto.url, t.stats, Stats(ts=now, uptime_s=9.0, fps=12.5, outbox_depth=7).to_json_bytes())
    report = ModelReported(version=8, state="verifying", ts=now)
    publish(mosquitto.url, t.model_reported, report.to_json_bytes(), retain=True)
    row = '#fleet-rows tr[data-device="s1/d1"]'
    wanted = ("online", "bins v7 (int8, onnxruntime-cpu)", "v8 verifying", "12.5")
    assert wait_until(lambda: all(w in css_text(browser, row) for w in wanted)), css_text(browser, row)
    assert css_text(browser, row + " td:nth-child(7)").strip() == "7"  # outbox depth
    will = Status(state="offline", session=4, ts=now, agent_version="0.1.0")
    publish(mosquitto.url, t.status, will.to_json_bytes(), retain=True)
    assert wait_until(lambda: "offline" in css_text(browser, row)), css_text(browser, row)
    assert browser.execute_script("return window.__sameDocument;") == "yes"

    jpeg = make_jpeg(200, 100)  # the alert names its JPEG, which comes later, while its page is open
    alert_id = make_alert().alert_id
    snap = Snapshot(uri=f"file:///s/{alert_id}.jpg", sha256=hashlib.sha256(jpeg).hexdigest(), size=len(jpeg))
    alert = make_alert(alert_id=alert_id, snapshot=snap)
    publish(mosquitto.url, t.alert_mismatch, alert.to_json_bytes())
    page = f"{console.url}/alerts/{alert.alert_id}"
    assert wait_until(lambda: browser.get(page) is None and shown(browser, "snapshot-missing"))
    assert wait_until(lambda: "live updates: connected" in css_title(browser))  # else the event is missed
    browser.execute_script("window.__sameDocument = 'yes';")
    publish(mosquitto.url, t.alert_snapshot(alert.alert_id), jpeg)
    loaded = (
        "var i = document.getElementById('snapshot'); return !!i && i.complete && i.naturalWidth === 200;"
    )
    assert wait_until(lambda: browser.execute_script(loaded))
    assert browser.execute_script("return window.__sameDocument;") == "yes"


def css_title(driver: Any) -> str:
    return str(driver.execute_script("var e = document.getElementById('live'); return e ? e.title : '';"))
