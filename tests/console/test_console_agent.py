"""The web console fed by a real agent: the agent replays synthetic bins against a partly wrong
manifest (ONNX Runtime, the tiny test model) and publishes its alerts and their pictures through its
outbox; the console (``binwatch console serve`` in a subprocess) stores them, and an operator's
headless Chromium sees them arrive in the open feed, picture included, without reloading.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.browser import (  # noqa: F401  (browser: the fixture)
    ConsoleProcess,
    browser,
    skip_without_console_extra,
)

skip_without_console_extra()

from tests.agent.mqtt_helpers import wait_until  # noqa: E402
from tests.broker import Mosquitto  # noqa: E402
from tests.console.test_console_e2e import login, start_console  # noqa: E402

pytestmark = pytest.mark.mqtt


@pytest.fixture()
def console(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[ConsoleProcess]:
    c = start_console(tmp_path, mosquitto.url)
    yield c
    c.stop()


def test_a_real_agents_alerts_appear_live_with_their_pictures(
    console: ConsoleProcess,
    mosquitto: Mosquitto,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    from agent.delivery.records import read_verdicts
    from agent.runtime import Runtime
    from tests.agent.bundles import make_tiny_bundle
    from tests.agent.conftest import agent_config
    from training.data.synth import synthesize

    data = tmp_path / "bins"
    synthesize(data, 60, 5, seed=7, mismatch=0.3, size=(96, 96), progress=False)
    login(browser, console.url)
    browser.execute_script("window.__sameDocument = 'yes';")  # gone if the page reloads
    assert wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#live.on")), "no event stream"

    cfg = agent_config(
        bundle=make_tiny_bundle(tmp_path / "bundle"),
        state_dir=tmp_path / "state",
        broker=mosquitto.url,
        replay=data,
        manifest=data / "manifest-mismatch",
        snapshots={"enabled": True, "publish": True},
    )
    cfg.cameras[0].replay_rate = 10  # a camera's pace: the feed fills while the operator watches
    rt = Runtime(cfg, exit_when_done=True)
    rt.start()
    assert rt.run() == 0
    decided = {
        v["alert_id"]
        for v in read_verdicts(tmp_path / "state" / "verdicts.jsonl")
        if v["verdict"] == "mismatch"
    }
    assert decided, "the tiny model raised no alert"

    shown = (
        "return Array.from(document.querySelectorAll('#feed-rows tr[data-alert-id]'))"
        ".map(r => r.dataset.alertId);"
    )
    assert wait_until(lambda: decided <= set(browser.execute_script(shown)), timeout=60), browser.page_source[
        :3000
    ]
    loaded = (
        "return Array.from(document.querySelectorAll('#feed-rows tr[data-alert-id] td.thumb img'))"
        ".filter(i => i.complete && i.naturalWidth > 0).length;"
    )
    visible = min(len(decided), 50)  # the feed shows the newest 50
    assert wait_until(lambda: browser.execute_script(loaded) >= visible, timeout=60), browser.page_source[
        :3000
    ]
    assert browser.execute_script("return window.__sameDocument;") == "yes"  # no reload happened
