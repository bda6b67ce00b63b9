"""Headless Chromium for the viewer's browser tests, its benchmark and its screenshots.

Debian's ``chromium`` driven through Debian's ``chromedriver`` (``scripts/browser.sh`` installs
both), each named by path so Selenium Manager never looks for a browser to download.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 900)
"""A laptop screen."""


def missing() -> str | None:
    """Why the browser cannot run here (None when it can)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file() and shutil.which(path.name) is None:
            return (
                f"{path} not found: install it with scripts/browser.sh (apt-get install {package})"
            )
    return None


def start_browser(width: int = WINDOW[0], height: int = WINDOW[1]) -> webdriver.Chrome:
    """A headless Chromium window of ``width`` × ``height``."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if CHROMEDRIVER.is_file() else Path(shutil.which("chromedriver"))
    return webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 20.0, poll: float = 0.02
) -> Any:
    """Poll ``condition`` until it returns something truthy; raise naming ``what`` at timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the page is still rendering: an element came and went
            last_error = exc
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} ({last_error})")


def rows(driver: webdriver.Chrome) -> list[Any]:
    """The episode list's rows on the page now."""
    return driver.find_elements(By.CSS_SELECTOR, "#episodes tbody tr")


def open_view(driver: webdriver.Chrome, url: str, ready: str, what: str) -> None:
    """Load ``url`` and wait for the CSS selector ``ready`` to match."""
    driver.get(url)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ready), what)


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The page's console errors since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
