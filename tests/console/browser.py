"""A real headless Chromium for the console's browser tests, driven by selenium.

Chromium and its driver come from Debian's packages (``apt-get install chromium chromium-driver``);
nothing is downloaded at run time (selenium is given the driver's path, so Selenium Manager never
runs). Without them the tests skip with a one-line reason that names the packages.

Use the ``browser`` fixture (import it into the test module), or :func:`start_browser` in a script.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/lib/chromium/chromium")
DRIVER_CANDIDATES = ("chromedriver", "/usr/lib/chromium/chromedriver")
MISSING_CHROMIUM = "headless Chromium not installed: apt-get install chromium chromium-driver"
MISSING_SELENIUM = "selenium not installed: pip install -e '.[dev]'"


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
