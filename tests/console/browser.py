"""A real headless Chromium for the console's browser tests, driven by selenium.

Chromium and its driver come from Debian's packages (``apt-get install chromium chromium-driver``);
nothing is downloaded at run time (selenium is given the driver's path, so Selenium Manager never
runs). Without them the tests skip with a one-line reason that names the packages.

Use the ``browser`` fixture (import it into the test module), or :func:`start_browser` in a script;
:class:`ConsoleProcess` runs ``binwatch console serve`` in a subprocess and :func:`make_jpeg` makes a
picture the browser can show (tests/console/test_console_e2e.py, scripts/console_screenshots.py).
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.agent.mqtt_helpers import wait_until
from tests.broker import free_port
from tests.hw import REPO

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/lib/chromium/chromium")
DRIVER_CANDIDATES = ("chromedriver", "/usr/lib/chromium/chromedriver")
MISSING_CHROMIUM = "headless Chromium not installed: apt-get install chromium chromium-driver"
MISSING_SELENIUM = "selenium not installed: pip install -e '.[dev]'"


CONSOLE_MODULES = (
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "jinja2",
    "itsdangerous",
    "argon2",
    "python_multipart",
)


def skip_without_console_extra(*more: str, any_of: tuple[str, ...] = ()) -> None:
    """Skip the calling test module when the console extra, a test-only package in ``more``, or
    every package of ``any_of`` (alternatives, e.g. httpx2 or httpx for TestClient) is missing;
    the reason names the package and the install line."""
    for name in (*CONSOLE_MODULES, *more):
        pytest.importorskip(name, reason=f"{name} not installed: pip install -e '.[console,dev]'")
    if any_of and not any(_importable(name) for name in any_of):
        pytest.skip(
            f"{' or '.join(any_of)} not installed: pip install -e '.[console,dev]'", allow_module_level=True
        )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _which(candidates: tuple[str, ...]) -> Optional[str]:
    for name in candidates:
        found = shutil.which(name) if "/" not in name else (name if Path(name).exists() else None)
        if found:
            return found
    return None


def browser_missing() -> str:
    """Why no browser test can run here ("" when Chromium, its driver and selenium are present)."""
    if _which(CHROMIUM_CANDIDATES) is None or _which(DRIVER_CANDIDATES) is None:
        return MISSING_CHROMIUM
    try:
        import selenium  # noqa: F401
    except ImportError:
        return MISSING_SELENIUM
    return ""


def start_browser(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium (selenium WebDriver) with a ``width`` x ``height`` window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(_which(CHROMIUM_CANDIDATES))
    for arg in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run its sandbox as root
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=str(_which(DRIVER_CANDIDATES)))
    )
    driver.set_page_load_timeout(30)
    return driver


def text_of(driver: Any, element_id: str) -> str:
    """The text of the element with ``element_id`` now ("" while the page is changing under it:
    not there yet, or gone stale because a navigation replaced it)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def css_text(driver: Any, css: str) -> str:
    """The text of the first element matching ``css``, read in one step in the page (a live update
    may replace the element between a lookup and a read)."""
    script = "var e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, css) or "")


def click(driver: Any, css: str) -> bool:
    """Click the element matching ``css``; False when it is missing or was replaced meanwhile (use
    it under ``wait_until``)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
    except (NoSuchElementException, StaleElementReferenceException):
        return False
    return True


def shown(driver: Any, element_id: str) -> bool:
    """Whether the element with ``element_id`` is displayed now (False while the page changes)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return bool(driver.find_element(By.ID, element_id).is_displayed())
    except (NoSuchElementException, StaleElementReferenceException):
        return False


@pytest.fixture()
def browser() -> Iterator[Any]:
    """A headless Chromium, closed after the test; skips (naming the package) when missing."""
    why = browser_missing()
    if why:
        pytest.skip(why)
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def make_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A real JPEG (the browser must be able to show it)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (200, 170, 120))
    draw = ImageDraw.Draw(img)
    for i in range(3):
        draw.rectangle((30 + i * 90, 60, 100 + i * 90, 180), fill=(60 + 50 * i, 90, 160))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


class ConsoleProcess:
    """``binwatch console serve`` in a subprocess, on a free port, with its own data folder."""

    def __init__(self, data_dir: Path, broker_url: str, port: Optional[int] = None) -> None:
        self.data_dir = data_dir
        self.broker_url = broker_url
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log = data_dir / "console.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "binwatch", "console", *args, "--data-dir", str(self.data_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            **kw,
        )

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "binwatch", "console", "serve", "--broker", self.broker_url]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        ok = wait_until(lambda: self.proc is not None and (self.proc.poll() is not None or self.healthy()))
        assert ok and self.proc.poll() is None, f"console did not start: {self.log.read_text()[-3000:]}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"console did not stop on SIGTERM: {self.log.read_text()[-3000:]}") from None
        self.proc = None
        return code
