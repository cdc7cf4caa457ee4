"""A real headless Chromium opens the dashboard of a running service and watches it work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilience import protect
from resilience.circuit import Registry
from resilience.web import AdminServer, serve_admin
from tests.support import find_binary, free_port

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from resilience.flags import Flags, InMemorySource  # noqa: E402

TOKEN = "let-me-in"


@pytest.fixture
def service(fresh_registry: Registry) -> Iterator[tuple[AdminServer, dict[str, bool], Flags]]:
    """A service calling 'ratings' about 20 times a second, with its admin app."""
    switch = {"down": False}

    @protect("ratings", min_calls=5, open_duration=1.0, timeout=0.5, fallback=[])
    def ratings() -> list[int]:
        if switch["down"]:
            raise ConnectionError("ratings is down")
        return [5]

    stop = threading.Event()

    def traffic() -> None:
        for _ in range(20 * 120):  # bounded: two minutes at most
            if stop.wait(0.05):
                return
            ratings()

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    flags = Flags(InMemorySource({"kill-recommendations": {"on": False}}))
    with serve_admin(port=free_port(), flags=flags, token=TOKEN, interval=0.2) as server:
        yield server, switch, flags
    stop.set()
    worker.join(5)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = find_binary("RESILIENCE_CHROMIUM", "chromium", "chromium-browser")
    driver_path = find_binary("RESILIENCE_CHROMEDRIVER", "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _read(driver: Any, selector: str, prop: str = "textContent") -> str | None:
    # Tiles are redrawn on every update: read in one script call, never through a stale handle.
    value = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e[arguments[1]] : null;",
        selector,
        prop,
    )
    return None if value is None else str(value)


def _tile_state(driver: Any) -> str | None:
    cls = _read(driver, '[data-circuit="ratings"]', "className") or ""
    return next((c[6:] for c in cls.split() if c.startswith("state-")), None)


def _flag_message(driver: Any) -> tuple[str, str]:
    el = driver.find_element(By.ID, "flag-message")
    return el.get_attribute("class") or "", el.text


def test_dashboard_shows_outage_recovery_and_flips_a_flag(
    service: Any, browser: Any, tmp_path: Path
) -> None:
    server, switch, flags = service
    driver = browser
    wait = WebDriverWait(driver, 10, poll_frequency=0.1)
    driver.get(server.url)
    wait.until(lambda d: _tile_state(d) == "closed")
    assert driver.find_element(By.ID, "conn").text == "live"
    wait.until(lambda d: _read(d, '[data-circuit="ratings"] .rate') not in (None, "0.0/s"))
    assert (_read(driver, '[data-circuit="ratings"] .p99') or "").endswith(" ms")
    assert _read(driver, '[data-circuit="ratings"] svg.spark polyline.rate', "tagName")
    assert _read(driver, '#pools tr[data-pool="ratings"]', "tagName") == "TR"

    switch["down"] = True
    wait.until(lambda d: _tile_state(d) == "open")  # within seconds of the dependency failing
    assert "ratings: closed → open" in (_read(driver, "#events") or "")
    driver.save_screenshot(str(tmp_path / "dashboard-open.png"))

    switch["down"] = False
    wait.until(lambda d: _tile_state(d) == "closed")  # a half-open trial succeeded

    row = '[data-flag="kill-recommendations"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    value = driver.find_element(By.CSS_SELECTOR, f"{row} .flag-value")
    value.clear()
    value.send_keys("true")
    driver.find_element(By.CSS_SELECTOR, f"{row} .flag-set").click()
    wait.until(lambda d: _flag_message(d)[0] == "error")
    assert "401" in _flag_message(driver)[1]
    assert flags.enabled("kill-recommendations") is False  # nothing changed without the token

    driver.find_element(By.ID, "token").send_keys(TOKEN)
    value = driver.find_element(By.CSS_SELECTOR, f"{row} .flag-value")
    value.clear()
    value.send_keys("true")
    driver.find_element(By.CSS_SELECTOR, f"{row} .flag-set").click()
    wait.until(lambda d: _flag_message(d)[0] == "ok")
    assert flags.enabled("kill-recommendations") is True  # the real Flags took the override
    wait.until(lambda d: _read(d, f"{row} .flag-current") == "true")
    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
