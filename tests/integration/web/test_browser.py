"""A real headless Chromium opens the dashboard of a running service and watches it work."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilience import AdaptiveLimit, protect
from resilience.circuit import Registry
from resilience.web import AdminServer, serve_admin
from tests.support import find_binary, free_port

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from resilience.flags import EtcdSource, Flags, InMemorySource  # noqa: E402
from tests.integration.flags.etcd_support import EtcdCluster, cluster  # noqa: E402

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
    # a refused change keeps the row as the operator left it: what they typed is still there
    assert (
        driver.find_element(By.CSS_SELECTOR, f"{row} .flag-value").get_attribute("value") == "true"
    )

    driver.find_element(By.ID, "token").send_keys(TOKEN)
    value = driver.find_element(By.CSS_SELECTOR, f"{row} .flag-value")
    value.clear()
    value.send_keys("true")
    driver.find_element(By.CSS_SELECTOR, f"{row} .flag-set").click()
    wait.until(lambda d: _flag_message(d)[0] == "ok")
    assert flags.enabled("kill-recommendations") is True  # the real Flags took the override
    # no writable source: the page says the change stayed in this process
    assert _read(driver, "#flag-store") == "changes are overrides in this process only"
    message = driver.find_element(By.ID, "flag-message")
    assert message.get_attribute("data-target") == "override"
    assert "in this process only (override)" in message.text
    wait.until(lambda d: _read(d, f"{row} .flag-current") == "true")
    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with cluster(1) as c:
        yield c


def test_a_flag_flipped_from_the_page_lands_in_etcd(
    etcd: EtcdCluster, fresh_registry: Registry, browser: Any, tmp_path: Path
) -> None:
    prefix = f"/web2-browser-{free_port()}/flags/"
    src = EtcdSource(etcd.endpoints, prefix, check_interval=0.2)
    flags = Flags(InMemorySource({"kill-recommendations": {"on": False}}), src)
    assert flags.ready(10)
    driver = browser
    wait = WebDriverWait(driver, 10, poll_frequency=0.1)
    row = '[data-flag="kill-recommendations"]'
    try:
        with serve_admin(port=free_port(), flags=flags, token=TOKEN, interval=0.2) as server:
            driver.get(server.url)
            # the page says where its changes go before anyone makes one
            wait.until(lambda d: _read(d, "#flag-store", "textContent") or "")
            assert src.name in (_read(driver, "#flag-store") or "")
            assert _read(driver, f"{row} .flag-source") == "memory"
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            value = driver.find_element(By.CSS_SELECTOR, f"{row} .flag-value")
            value.clear()
            value.send_keys("true")
            driver.find_element(By.CSS_SELECTOR, f"{row} .flag-set").click()
            wait.until(lambda d: _flag_message(d)[0] == "ok")

            spec, revision = src.get("kill-recommendations")
            assert spec == {"on": True} and revision > 0  # in etcd, for every process
            assert [(h.who, h.action) for h in src.history("kill-recommendations")] == [
                ("dashboard", "write")
            ]
            assert flags.enabled("kill-recommendations") is True and flags.overrides() == {}
            # the page says where it went
            message = driver.find_element(By.ID, "flag-message")
            assert message.get_attribute("data-target") == src.name
            assert message.get_attribute("data-revision") == str(revision)
            assert f"in {src.name}, revision {revision}: every process sees it" in message.text
            wait.until(lambda d: _read(d, f"{row} .flag-source") == src.name)
            assert _read(driver, f"{row} .flag-current") == "true"
            driver.save_screenshot(str(tmp_path / "dashboard-etcd.png"))

            # Another operator changes it while this one is typing: the page does not redraw
            # under them, and their stale change is refused, not written over the other's.
            value = driver.find_element(By.CSS_SELECTOR, f"{row} .flag-value")
            value.click()
            other = EtcdSource(etcd.endpoints, prefix)
            now = other.write("kill-recommendations", {"on": False}, actor="bob").revision
            assert src.wait_revision(now, 10)
            # typed over, as a person does (WebDriver's clear() would blur the field)
            value.send_keys(Keys.CONTROL, "a")
            value.send_keys("true")
            driver.find_element(By.CSS_SELECTOR, f"{row} .flag-set").click()
            wait.until(lambda d: _flag_message(d)[0] == "error")
            assert "409" in _flag_message(driver)[1]
            assert src.get("kill-recommendations") == ({"on": False}, now)
            wait.until(lambda d: _read(d, f"{row} .flag-current") == "false")

            # delete asks first (every process loses the flag); declined, nothing happens
            driver.find_element(By.CSS_SELECTOR, f"{row} .flag-delete").click()
            wait.until(lambda d: d.switch_to.alert)
            assert "Every process" in driver.switch_to.alert.text
            driver.switch_to.alert.dismiss()
            assert src.get("kill-recommendations") == ({"on": False}, now)
            # accepted: gone from etcd, the built-in default shows through
            driver.find_element(By.CSS_SELECTOR, f"{row} .flag-delete").click()
            wait.until(lambda d: d.switch_to.alert)
            driver.switch_to.alert.accept()
            wait.until(lambda d: _flag_message(d)[0] == "ok")
            assert "deleted" in _flag_message(driver)[1]
            assert src.get("kill-recommendations") == (None, 0)
            wait.until(lambda d: _read(d, f"{row} .flag-source") == "memory")
    finally:
        flags.close()


def test_a_tile_shows_the_concurrency_limit_and_what_an_adaptive_one_sees(
    fresh_registry: Registry, browser: Any
) -> None:
    adaptive = fresh_registry.dependency(
        "search", isolation="semaphore", limit=AdaptiveLimit("vegas", window=1)
    )
    for _ in range(5):
        adaptive.call(lambda: time.sleep(0.002))
    fresh_registry.dependency("ratings", isolation="semaphore", max_concurrent=12).call(list)
    with serve_admin(port=free_port(), interval=0.2) as server:
        driver = browser
        driver.get(server.url)
        wait = WebDriverWait(driver, 10, poll_frequency=0.1)
        wait.until(lambda d: _read(d, '[data-circuit="search"] .limit'))
        text = _read(driver, '[data-circuit="search"] .limit') or ""
        assert text.startswith("20 vegas, 0 in flight, rtt ") and "(base " in text, text
        wait.until(lambda d: _read(d, '[data-circuit="ratings"] .limit'))
        assert _read(driver, '[data-circuit="ratings"] .limit') == "12 (fixed), 0 in flight"


class _ZonedCache:
    """A cache status as the cache part reports it: zones with state, hit ratio and errors."""

    name = "sessions"

    def status(self) -> dict[str, Any]:
        return {
            "zones": {
                "us-east-1a": {"state": "closed", "hit_ratio": 0.93, "errors": 0, "servers": ["a"]},
                "us-east-1b": {"state": "open", "hit_ratio": None, "errors": 41},
                "us-east-1c": {"state": "half_open", "hit_ratio": 0.5},  # no "errors": read safely
            }
        }


N_DEPS = 200


@pytest.fixture
def crowded(fresh_registry: Registry) -> Iterator[AdminServer]:
    """A service with 200 dependencies (40 on thread pools), a few open, and a cache."""
    for i in range(N_DEPS):
        thread = i % 5 == 0
        dep = fresh_registry.dependency(
            f"svc.dep-{i:03d}", isolation="thread" if thread else "semaphore", pool_size=1
        )
        dep.call(lambda: None)
    for i in (7, 123, 188):
        fresh_registry.dependency(f"svc.dep-{i:03d}").force_open()
    stop = threading.Event()

    def traffic() -> None:  # keeps every tick's numbers moving
        deps = list(fresh_registry)
        for n in range(200_000):  # bounded
            if stop.is_set():
                return
            with contextlib.suppress(Exception):
                deps[n % len(deps)].call(lambda: None)
            if n % 200 == 0:
                stop.wait(0.01)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    with serve_admin(port=free_port(), caches=[_ZonedCache()], interval=0.25) as server:
        yield server
    stop.set()
    worker.join(5)


def _busy_seconds(driver: Any) -> float:
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def test_dashboard_stays_usable_at_200_dependencies(
    crowded: AdminServer, browser: Any, tmp_path: Path
) -> None:
    driver = browser
    wait = WebDriverWait(driver, 20, poll_frequency=0.1)
    driver.get(crowded.url)
    count = "return document.querySelectorAll('#circuits [data-circuit]').length"
    wait.until(lambda d: d.execute_script(count) == N_DEPS)
    assert (_read(driver, "#summary") or "") == f"{N_DEPS} dependencies, 3 open"

    # Trouble first: the open circuits lead the list, whatever their names.
    first = driver.execute_script(
        "return [...document.querySelectorAll('#circuits [data-circuit]')].slice(0, 3)"
        ".map(e => e.dataset.circuit)"
    )
    assert sorted(first) == ["svc.dep-007", "svc.dep-123", "svc.dep-188"]

    # Readable: the tiles scroll inside their own box, so the page keeps its shape and the
    # sections below stay within reach; the text is not shrunk to fit.
    box = driver.execute_script(
        "const b = document.getElementById('circuits'); const s = getComputedStyle(b);"
        "return [b.scrollHeight, b.clientHeight, s.overflowY,"
        " document.documentElement.scrollHeight, window.innerHeight,"
        " parseFloat(getComputedStyle(b.querySelector('.tile dd')).fontSize)]"
    )
    scroll_height, client_height, overflow, page_height, window_height, font_px = box
    assert overflow == "auto" and scroll_height > 3 * client_height
    assert page_height < 4 * window_height
    assert font_px >= 12
    shot = tmp_path / "dashboard-200.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0

    # Responsive: over 5 s of live updates (4 a second, 200 dependencies) the page's main
    # thread is busy a small part of the time, because only tiles in view are redrawn.
    driver.execute_cdp_cmd("Performance.enable", {})
    busy0, t0 = _busy_seconds(driver), time.monotonic()
    time.sleep(5)
    busy = (_busy_seconds(driver) - busy0) / (time.monotonic() - t0)
    assert busy < 0.25, f"main thread busy {busy:.0%} of the time"

    # Filterable: typing narrows 200 tiles (and the pools table) to the matching ones at once.
    started = time.monotonic()
    driver.find_element(By.ID, "filter").send_keys("dep-01")
    visible = (
        "return [...document.querySelectorAll('#circuits [data-circuit]')]"
        ".filter(e => !e.hidden).map(e => e.dataset.circuit)"
    )
    wait.until(lambda d: len(d.execute_script(visible)) == 10)
    assert time.monotonic() - started < 2.0
    assert all(name.startswith("svc.dep-01") for name in driver.execute_script(visible))
    assert _read(driver, "#shown") == f"10 of {N_DEPS} shown"
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#pools tbody tr')].filter(r => !r.hidden)"
        ".map(r => r.dataset.pool)"
    )
    assert rows == ["svc.dep-010", "svc.dep-015"]
    # a tile scrolled into view by the filter shows live numbers, not an empty shell
    wait.until(lambda d: (_read(d, '[data-circuit="svc.dep-010"] .rate') or "").endswith("/s"))

    # Cache zones: a table like the pools one, not a key=value dump.
    zone = '#caches table[data-cache="sessions"] tr[data-zone="us-east-1{}"] td:nth-child({})'
    assert _read(driver, zone.format("a", 2)) == "closed"
    assert _read(driver, zone.format("a", 3)) == "93.0%"
    assert _read(driver, zone.format("a", 4)) == "0"
    assert _read(driver, zone.format("b", 2)) == "open"
    assert _read(driver, zone.format("b", 2), "className") == "zone-down"
    assert _read(driver, zone.format("b", 4)) == "41"
    assert _read(driver, zone.format("c", 2)) == "half open"
    assert _read(driver, zone.format("c", 4)) == "\u2013"  # an en dash: no count yet
    headers = driver.execute_script(
        "return [...document.querySelectorAll('#caches thead th')].map(e => e.textContent)"
    )
    assert headers == ["zone", "state", "hit ratio", "errors"]
    assert "=" not in (_read(driver, "#caches") or "")

    shot = tmp_path / "dashboard-200-filtered.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
