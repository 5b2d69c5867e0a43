"""Screenshots of the web console for docs/console.md: the feed, an alert page and the fleet page.

    python scripts/console_screenshots.py [--out docs/img]

Runs everything for real on this machine: a mosquitto on a free loopback port, ``binwatch console
serve`` in a subprocess, a few devices' status/stats/model reports and mismatch alerts with their
JPEGs published over MQTT (pictures from the shared ABID sample when it is there, else drawn), two
reviews made through the page in headless Chromium, then the three screenshots. Needs mosquitto,
chromium, chromium-driver (apt) and the console and dev extras.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from contract.messages import (  # noqa: E402
    CameraStatus,
    ModelRef,
    ModelReported,
    Snapshot,
    Stats,
    Status,
)
from contract.topics import Topics  # noqa: E402
from tests.agent.mqtt_helpers import make_alert, publish, wait_until  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402
from tests.console.browser import ConsoleProcess, browser_missing, make_jpeg, start_browser  # noqa: E402
from tests.hw import ABID_SAMPLE  # noqa: E402

PASSWORD = "screenshot password"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
MODEL = ModelRef(name="bins-r18", version=7, sha256="3f" * 32, precision="int8", backend="tensorrt")

# (site, device, online, fps, outbox depth, model report)
DEVICES = [
    ("dc1", "jetson-01", True, 14.8, 0, ("active", 7, "")),
    ("dc1", "jetson-02", True, 15.0, 3, ("warming", 8, "building the TensorRT engine")),
    ("dc1", "jetson-03", False, 0.0, 41, ("active", 7, "")),
    ("dc2", "jetson-07", True, 9.6, 0, ("failed", 8, "golden set: 2 of 16 outputs differ")),
]
# (device, bin, expected, predicted, p_expected, minutes ago)
ALERTS = [
    ("jetson-01", "P-1-A-0412", 4, 3, 0.04, 42),
    ("jetson-02", "P-1-B-0127", 2, 3, 0.08, 35),
    ("jetson-01", "P-2-C-0033", 5, 4, 0.02, 27),
    ("jetson-02", "P-1-A-0098", 3, 2, 0.11, 18),
    ("jetson-01", "P-2-D-0561", 1, 0, 0.06, 9),
    ("jetson-02", "P-3-A-0204", 6, 5, 0.03, 2),
]


def distribution(expected: int, predicted: int, p_expected: float) -> dict[str, float]:
    """A plausible count distribution: most mass on ``predicted``, ``p_expected`` on ``expected``."""
    probs = {str(n): 0.0 for n in range(8)}
    probs[str(predicted)] += 0.85 - p_expected
    probs[str(expected)] += p_expected
    for n in (predicted - 1, predicted + 1):
        if 0 <= n < 8 and n != expected:
            probs[str(n)] += 0.06
    rest = 1.0 - sum(probs.values())
    probs["7"] += rest / 2
    probs["0"] += rest / 2
    return {("7+" if k == "7" else k): round(v, 4) for k, v in probs.items() if v > 0}


def pictures() -> list[bytes]:
    folder = ABID_SAMPLE / "bin-images"
    if folder.is_dir():
        files = sorted(folder.glob("*.jpg"))[10 : 10 + len(ALERTS)]
        if len(files) == len(ALERTS):
            return [f.read_bytes() for f in files]
    return [make_jpeg(480, 320) for _ in ALERTS]


def publish_fleet(url: str) -> None:
    for site, device, online, fps, depth, (state, version, detail) in DEVICES:
        t = Topics(site, device)
        cams = {"cam0": CameraStatus(state="live" if online else "lost", fps=fps)}
        status = Status(
            state="online" if online else "offline",
            session=3,
            ts=NOW - timedelta(minutes=0 if online else 14),
            agent_version="0.1.0",
            model=MODEL,
            cameras=cams,
        )
        publish(url, t.status, status.to_json_bytes(), retain=True)
        stats = Stats(
            ts=NOW, uptime_s=86400.0, fps=fps, frames_total=1_250_000, outbox_depth=depth, alerts_published=37
        )
        publish(url, t.stats, stats.to_json_bytes())
        report = ModelReported(version=version, state=state, detail=detail, ts=NOW - timedelta(minutes=5))
        publish(url, t.model_reported, report.to_json_bytes(), retain=True)


def publish_alerts(url: str) -> list[str]:
    ids = []
    for seq, ((device, bin_id, exp, pred, p, ago), jpeg) in enumerate(zip(ALERTS, pictures(), strict=True)):
        alert_id = str(uuid.uuid4())
        t = Topics("dc1", device)
        snap = Snapshot(
            uri=f"file:///var/lib/binwatch/snapshots/{alert_id}.jpg",
            sha256=hashlib.sha256(jpeg).hexdigest(),
            topic=t.alert_snapshot(alert_id),
            size=len(jpeg),
        )
        alert = make_alert(
            site="dc1",
            device=device,
            alert_id=alert_id,
            seq=seq,
            bin_id=bin_id,
            event_id=f"ev-{bin_id}",
            expected_qty=exp,
            predicted_qty=pred,
            p_expected=p,
            distribution=distribution(exp, pred, p),
            frames=3,
            frame_ts=NOW - timedelta(minutes=ago),
            published_ts=NOW - timedelta(minutes=ago),
            model=MODEL,
            snapshot=snap,
        )
        publish(url, t.alert_mismatch, alert.to_json_bytes())
        publish(url, t.alert_snapshot(alert_id), jpeg)
        ids.append(alert_id)
    return ids


def review(driver: Any, base: str, alert_id: str, decision: str, qty: str = "", note: str = "") -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/alerts/{alert_id}")
    if qty:
        driver.find_element(By.ID, "actual_qty").send_keys(qty)
    if note:
        driver.find_element(By.ID, "note").send_keys(note)
    driver.find_element(By.ID, {"confirmed": "confirm", "false_alarm": "false-alarm"}[decision]).click()
    assert wait_until(lambda: "Review recorded" in driver.page_source), "review not recorded"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    logging.getLogger("paho").setLevel(logging.CRITICAL)  # one-shot publishes log their disconnect
    why = browser_missing()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker")
        broker.start()
        console = ConsoleProcess(work / "console", broker.url)
        pw = work / "pw"
        pw.write_text(PASSWORD + "\n")
        assert console.cli("user", "add", "ana", "--password-file", str(pw)).returncode == 0
        console.start()
        driver = start_browser(1400, 900)
        try:
            shoot(driver, console, broker, args.out)
        finally:
            driver.quit()
            console.stop()
            broker.stop()
    return 0


def shoot(driver: Any, console: ConsoleProcess, broker: Mosquitto, out: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(console.url + "/login")
    driver.find_element(By.ID, "username").send_keys("ana")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    assert wait_until(lambda: driver.find_elements(By.ID, "feed-rows"))
    publish_fleet(broker.url)
    ids = publish_alerts(broker.url)
    assert wait_until(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#feed-rows td.thumb img")) == len(ids)
    )
    review(driver, console.url, ids[0], "confirmed", "3", "one filter missing, counted by hand")
    review(driver, console.url, ids[1], "false_alarm", note="two items stacked")
    driver.get(console.url + "/")
    loaded = "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);"
    assert wait_until(lambda: driver.execute_script(loaded))
    driver.save_screenshot(str(out / "console-feed.png"))
    review(driver, console.url, ids[3], "confirmed", "2", "")
    driver.set_window_size(1400, 1150)
    driver.get(f"{console.url}/alerts/{ids[3]}")
    assert wait_until(lambda: driver.execute_script(loaded))
    driver.save_screenshot(str(out / "console-alert.png"))
    driver.set_window_size(1400, 600)
    driver.get(console.url + "/fleet")
    assert wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#fleet-rows tr")) == len(DEVICES))
    driver.save_screenshot(str(out / "console-fleet.png"))
    print(f"wrote {out}/console-feed.png, console-alert.png, console-fleet.png")


if __name__ == "__main__":
    sys.exit(main())
