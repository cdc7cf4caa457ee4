"""Protected calls against a real aiohttp server on loopback.

Sync calls go through the thread-pool bulkhead with urllib; async calls through aiohttp. The
server counts the requests that reached it, so short-circuits are proven by the absence of hits.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    State,
    metrics,
    protect,
    registry,
    testing,
)
from tests.flaky_server import FlakyServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    s = FlakyServer()

    async def metrics_route(request: web.Request) -> web.Response:
        reg = CollectorRegistry()
        reg.register(metrics.ResilienceCollector())  # reads the test's default registry
        return web.Response(body=generate_latest(reg), content_type="text/plain")

    s.extra_routes.append(web.get("/metrics", metrics_route))
    s.start()
    yield s
    s.stop()


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_sync_caller_never_waits_longer_than_the_timeout(server: FlakyServer) -> None:
    get = protect("slowsvc", timeout=0.2, pool_size=4, min_calls=1000)(fetch)
    server.mode, server.delay = "slow", 2.0
    waits = []
    for _ in range(3):
        t0 = time.perf_counter()
        with pytest.raises(CallTimeoutError):
            get(server.url + "/slow")
        waits.append(time.perf_counter() - t0)
    assert max(waits) < 0.2 + 0.15, waits
    pool = registry().dependency("slowsvc").pool
    assert pool is not None and pool.abandoned >= 1  # workers still inside urllib


def test_pool_rejects_beyond_pool_size_plus_queue_size(server: FlakyServer) -> None:
    get = protect("pooled", timeout=5.0, pool_size=2, queue_size=3, min_calls=1000)(fetch)
    server.mode, server.delay = "slow", 0.5
    outcomes: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            get(server.url + "/x")
            result = "ok"
        except BulkheadFullError:
            result = "rejected"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5 and outcomes.count("rejected") == 3
    assert server.hits["/x"] == 5
    assert registry().dependency("pooled").pool.max_running == 2  # type: ignore[union-attr]


def test_circuit_opens_short_circuits_half_opens_and_closes(server: FlakyServer) -> None:
    def call(url: str) -> dict[str, Any]:
        try:
            return fetch(url)
        except urllib.error.HTTPError as exc:
            raise ConnectionError(exc.code) from exc

    get = protect("breaker", timeout=2.0, min_calls=5, failure_rate=0.5, open_duration=5)(call)
    with testing.fake_clock() as clock:
        server.mode = "fail"
        for _ in range(5):
            with pytest.raises(ConnectionError):
                get(server.url + "/r")
        dep = registry().dependency("breaker")
        assert dep.state is State.OPEN
        for _ in range(10):
            with pytest.raises(CircuitOpenError):
                get(server.url + "/r")
        assert server.hits["/r"] == 5  # short-circuited calls never reached the server
        server.mode = "ok"
        clock.advance(5.0)
        assert get(server.url + "/r")["ok"] is True  # the half-open trial
        assert dep.state is State.CLOSED
        assert get(server.url + "/r")["ok"] is True
    assert server.hits["/r"] == 7

    text = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    samples = {
        (s.name, s.labels.get("outcome")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.labels.get("dependency") == "breaker"
    }
    ran = (
        samples[("resilience_calls_total", "success")]
        + samples[("resilience_calls_total", "failure")]
    )
    assert ran == server.hits["/r"] == 7
    assert samples[("resilience_calls_total", "short_circuited")] == 10
    assert samples[("resilience_circuit_opened_total", None)] == 1
    assert samples[("resilience_call_duration_seconds_count", None)] == 7


async def test_async_calls_through_aiohttp(server: FlakyServer) -> None:
    async with aiohttp.ClientSession() as session:

        @protect(
            "async-svc", timeout=0.2, min_calls=4, open_duration=5, fallback={"fallback": True}
        )
        async def get(path: str) -> dict[str, Any]:
            async with session.get(server.url + path) as resp:
                resp.raise_for_status()
                return await resp.json()  # type: ignore[no-any-return]

        assert (await get("/a"))["ok"] is True
        server.mode, server.delay = "slow", 2.0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await get("/a") == {"fallback": True}
        assert loop.time() - t0 < 0.2 + 0.15
        server.mode = "fail"
        for _ in range(3):
            assert await get("/a") == {"fallback": True}
        dep = registry().dependency("async-svc")
        assert dep.state is State.OPEN
        before = server.hits["/a"]
        results = await asyncio.gather(*(get("/a") for _ in range(20)))
        assert all(r == {"fallback": True} for r in results)
        assert server.hits["/a"] == before
