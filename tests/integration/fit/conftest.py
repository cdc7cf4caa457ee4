"""Real processes for the FIT integration tests: memcached, Toxiproxy, aiohttp services."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from resilience import fit
from resilience.fit import ToxiproxyClient
from tests.support import find_binary, free_port

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
    binary = find_binary("RESILIENCE_MEMCACHED", "memcached")
    port = free_port()
    args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16"]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told which user to be
        args += ["-u", "root"]
    proc = subprocess.Popen(args)
    try:
        import socket

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True

        _wait(up, "memcached")
        yield ("127.0.0.1", port)
    finally:
        _stop(proc)


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
