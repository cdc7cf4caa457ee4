"""Streams and hostile requests against the admin app on a real loopback HTTP server.

A client that stops reading is dropped instead of queueing without bound; every reader shares
one snapshot per tick; bytes that are not UTF-8 in a bearer header are a 401 and a deeply nested
body a 400, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from resilience.circuit import Registry
from resilience.flags import Flags, InMemorySource
from resilience.web import admin_app

# These tests fill a dependency's counters with sync calls made on the event loop's thread on
# purpose; the warning that such calls block the loop is tested in tests/unit/circuit.
pytestmark = pytest.mark.filterwarnings("ignore:resilience. the sync function:RuntimeWarning")

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class CountingCache:
    """A cache whose status() counts how often the admin state was computed."""

    name = "sessions"

    def __init__(self, payload: int = 0) -> None:
        self.calls = 0
        self.payload = "x" * payload

    def status(self) -> dict[str, Any]:
        self.calls += 1
        return {
            "zones": {"a": {"state": "closed", "hit_ratio": 1.0, "errors": 0}},
            "pad": self.payload,
        }


async def _client(app: web.Application) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def cache() -> CountingCache:
    return CountingCache()


@pytest.fixture
async def flags(fresh_registry: Registry) -> AsyncIterator[Flags]:
    with Flags(InMemorySource({"x": {"on": False}}), registry=fresh_registry) as flags:
        yield flags


@pytest.fixture
async def client(
    fresh_registry: Registry, cache: CountingCache, flags: Flags
) -> AsyncIterator[TestClient[Any, Any]]:
    fresh_registry.dependency("ratings", isolation="semaphore").call(lambda: 1)
    app = admin_app(caches=[cache], flags=flags, token=TOKEN, interval=0.05, max_stream_clients=5)
    c = await _client(app)
    yield c
    await c.close()


async def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes (what a client library would refuse to send) and read the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# -- hostile requests --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [b"POST /circuits/ratings", b"POST /flags/x", b"DELETE /flags/x"])
async def test_bearer_that_is_not_utf8_is_401(
    client: TestClient[Any, Any], path: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    port = client.server.port
    assert port is not None
    for token in (b"\xff\xfe\xfd", b"s3cr\xc3", TOKEN.encode() + b"\x80"):
        status = await _raw(
            port,
            path
            + b" HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
            + token
            + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        assert status.startswith(b"HTTP/1.1 401"), status
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_protected_read_with_non_utf8_token_is_401(fresh_registry: Registry) -> None:
    c = await _client(admin_app(token=TOKEN, protect_reads=True))
    try:
        port = c.server.port
        assert port is not None
        status = await _raw(
            port,
            b"GET /state HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \xff\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert status.startswith(b"HTTP/1.1 401"), status
        status = await _raw(
            port, b"GET /state?access_token=%ff%fe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert status.startswith(b"HTTP/1.1 401"), status
    finally:
        await c.close()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # json.loads would raise RecursionError
        b'{"state": "open", "value": ' + b"[" * 40 + b"]" * 40 + b"}",  # parses; too deep
        b'{"state": "open", "value": [[[[',  # broken JSON
        b'{"state": "open", "value": "\xff\xfe"}',  # not UTF-8
    ],
)
@pytest.mark.parametrize("path", ["/circuits/ratings", "/flags/x"])
async def test_bad_bodies_on_authorised_writes_are_400(
    client: TestClient[Any, Any],
    fresh_registry: Registry,
    flags: Flags,
    body: bytes,
    path: str,
) -> None:
    resp = await client.post(path, data=body, headers=AUTH)
    assert resp.status == 400, await resp.text()
    assert fresh_registry.dependency("ratings").state.value == "closed"
    assert flags.overrides() == {} and flags.enabled("x") is False


async def test_strings_do_not_count_as_nesting(
    client: TestClient[Any, Any], fresh_registry: Registry
) -> None:
    body = {"state": "open", "note": "[" * 500 + "{" * 500}
    resp = await client.post("/circuits/ratings", json=body, headers=AUTH)
    assert resp.status == 200
    ok = {"state": "reset", "deep": json.loads("[" * 30 + "]" * 30)}
    assert (await client.post("/circuits/ratings", json=ok, headers=AUTH)).status == 200
    bogus = {**AUTH, "Content-Type": "application/json; charset=no-such-charset"}
    resp = await client.post("/circuits/ratings", data=b'{"state": "open"}', headers=bogus)
    assert resp.status == 200  # JSON is UTF-8 whatever the header claims
    assert fresh_registry.dependency("ratings").state.value == "forced_open"


# -- /admin -> /admin/ -------------------------------------------------------------------------


async def test_mounted_admin_redirects_to_its_page(fresh_registry: Registry) -> None:
    main = web.Application()
    main.add_subapp("/admin", admin_app(token=TOKEN, protect_reads=True))
    c = await _client(main)
    try:
        resp = await c.get("/admin", allow_redirects=False)
        assert resp.status == 308 and resp.headers["Location"] == "/admin/"
        resp = await c.get("/admin?access_token=s3cret", allow_redirects=False)
        assert resp.headers["Location"] == "/admin/?access_token=s3cret"
        page = await c.get("/admin?access_token=s3cret")  # followed: the page itself
        assert page.status == 200 and "<title>resilience</title>" in await page.text()
    finally:
        await c.close()


async def test_standalone_root_is_the_page(fresh_registry: Registry) -> None:
    c = await _client(admin_app())
    try:
        resp = await c.get("/", allow_redirects=False)
        assert resp.status == 200 and "<title>resilience</title>" in await resp.text()
    finally:
        await c.close()


# -- streams -----------------------------------------------------------------------------------


async def _frames(resp: ClientResponse, n: int) -> list[str]:
    """The next ``n`` SSE frames of a response, as raw text blocks."""
    out: list[str] = []
    block: list[str] = []
    while len(out) < n:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        if line == "\n":
            if block:
                out.append("".join(block))
            block = []
        else:
            block.append(line)
    return out


async def test_one_snapshot_per_tick_shared_by_every_reader(
    client: TestClient[Any, Any], cache: CountingCache
) -> None:
    streams = [await client.get("/stream") for _ in range(5)]
    for s in streams:
        await _frames(s, 2)  # retry + the current state
    before = cache.calls
    started = time.monotonic()
    for _ in range(10):
        await asyncio.gather(*(_frames(s, 1) for s in streams))  # each saw one more tick
        for _ in range(5):
            assert (await client.get("/state")).status == 200
            assert (await client.get("/caches")).status == 200
    ticks = (time.monotonic() - started) / 0.05
    computed = cache.calls - before
    # Per reader it would be 5 clients x 10 ticks + 100 requests = 150 computations.
    assert computed <= ticks + 3, (computed, ticks)
    for s in streams:
        s.close()


async def test_state_reads_see_a_write_at_once(
    client: TestClient[Any, Any], fresh_registry: Registry
) -> None:
    assert (await (await client.get("/circuits")).json())["circuits"][0]["state"] == "closed"
    await client.post("/circuits/ratings", json={"state": "open"}, headers=AUTH)
    assert (await (await client.get("/circuits")).json())["circuits"][0]["state"] == "forced_open"


async def test_hystrix_stream_pings_with_nothing_registered(fresh_registry: Registry) -> None:
    c = await _client(admin_app(interval=0.05))
    try:
        resp = await c.get("/hystrix.stream")
        frames = await _frames(resp, 3)
        assert frames[0] == "retry: 2000\n"
        assert frames[1:] == ["ping: \n", "ping: \n"]  # Hystrix's keep-alive, byte for byte
        fresh_registry.dependency("late")  # once something is registered, data instead
        for _ in range(20):
            (frame,) = await _frames(resp, 1)
            if frame.startswith("data: "):
                assert json.loads(frame[6:])["name"] == "late"
                break
        else:
            raise AssertionError("no data after a dependency was registered")
        resp.close()
    finally:
        await c.close()


async def test_client_that_stops_reading_is_dropped(fresh_registry: Registry) -> None:
    # A big state (about 40 kB a tick) fills the socket buffers within a few ticks.
    for i in range(100):
        fresh_registry.dependency(f"dep-{i:03d}", isolation="semaphore")
    app = admin_app(caches=[CountingCache(payload=20_000)], interval=0.02, stream_backlog=4)
    c = await _client(app)
    try:
        port = c.server.port
        assert port is not None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")  # and never read again
        reader = await c.get("/stream")  # a client that keeps reading stays
        name = "resilience_stream_dropped_clients_total"
        before = _metric(await (await c.get("/metrics")).text(), name, stream="state") or 0.0
        dropped = 0.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await _frames(reader, 1)
            metrics = await (await c.get("/metrics")).text()
            dropped = (_metric(metrics, name, stream="state") or 0.0) - before
            if dropped:
                break
        assert dropped == 1.0
        # its connection was closed: the socket reads to EOF once drained
        sock.settimeout(5)
        while sock.recv(65536):
            pass
        sock.close()
        await _frames(reader, 2)  # the reading client was never held up nor dropped
        clients = _metric(
            await (await c.get("/metrics")).text(), "resilience_stream_clients", stream="state"
        )
        assert clients == 1.0
        reader.close()
    finally:
        await c.close()


async def test_burst_of_state_changes_does_not_drop_a_reading_client(
    fresh_registry: Registry,
) -> None:
    dep = fresh_registry.dependency("flappy", isolation="semaphore")
    c = await _client(admin_app(interval=0.05, stream_backlog=4))
    try:
        dropped = "resilience_stream_dropped_clients_total"
        before = _metric(await (await c.get("/metrics")).text(), dropped, stream="state") or 0.0
        resp = await c.get("/stream")
        await _frames(resp, 2)

        def flap() -> None:
            for _ in range(1000):
                dep.force_open()
                dep.force_closed()

        thread = threading.Thread(target=flap)
        thread.start()
        thread.join()
        changes, last = 0, None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (block,) = await _frames(resp, 1)
            if block.startswith("event: state_change"):
                events = [
                    json.loads(line[6:]) for line in block.splitlines() if line.startswith("data: ")
                ]
                changes += len(events)
                last = events[-1]
            elif changes and block.startswith("event: state"):
                break  # the tick after the burst
        # Batched: 2000 transitions in a burst never took 2000 queue slots. While the loop was
        # busy, at most the last 1000 were kept: the stream never grows without bound.
        assert 1000 <= changes <= 2000
        assert last is not None and last["new"] == "forced_closed"
        metrics = await (await c.get("/metrics")).text()
        assert (_metric(metrics, dropped, stream="state") or 0.0) == before
        resp.close()
    finally:
        await c.close()
