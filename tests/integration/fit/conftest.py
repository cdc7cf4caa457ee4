"""Real processes for the FIT integration tests: memcached, Toxiproxy, aiohttp services."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from resilience import fit
from resilience.fit import ToxiproxyClient
from tests.support import find_binary, free_port, start_memcached, stop

SECRET = "integration-secret"


@pytest.fixture(autouse=True)
def fit_off() -> Iterator[None]:
    fit.disable()
    fit.stats.reset()
    yield
    fit.disable()
    fit.stats.reset()


def _wait(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def memcached() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = start_memcached(port, memory_mb=16)
    yield ("127.0.0.1", port)
    stop(proc)


@pytest.fixture
def toxiproxy() -> Iterator[ToxiproxyClient]:
    binary = find_binary("RESILIENCE_TOXIPROXY", "toxiproxy-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-host", "127.0.0.1", "-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            with urllib.request.urlopen(url + "/version", timeout=0.5) as r:
                return r.status == 200

        _wait(up, "toxiproxy-server")
        yield ToxiproxyClient(url, timeout=2.0)
    finally:
        _stop(proc)


Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on free loopback ports; returns each one's base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
