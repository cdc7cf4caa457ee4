from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pymemcache.client.hash import HashClient

from resilience import request_scope
from resilience.cache import AsyncReplicatedCache, ReplicatedCache
from resilience.circuit import State
from resilience.errors import InvalidKeyError, ValueTooLargeError

from .conftest import Cluster

pytestmark = pytest.mark.integration


def make(cluster: Cluster, **kw: Any) -> ReplicatedCache:
    kw.setdefault("local_zone", "a")
    kw.setdefault("timeout", 0.05)
    return ReplicatedCache(cluster.spec, **kw)


def raw_zone(cluster: Cluster, zone: str) -> HashClient:
    """A plain pymemcache client on one zone: same key placement as the cache."""
    return HashClient(cluster.spec[zone], default_noreply=False, timeout=1)


def test_killed_zone_costs_no_misses(cluster: Cluster) -> None:
    c = make(cluster)
    values = {f"user:{i}": {"id": i} for i in range(40)}
    for k, v in values.items():
        assert c.set(k, v).ok
    cluster.kill("a")
    assert all(c.get(k) == v for k, v in values.items())
    assert c.get_many(list(values)) == values
    assert c.stats.requests.get(("b", "get", "miss"), 0) == 0
    c.close()


def test_stalled_zone_opens_breaker_and_reads_stop_waiting(cluster: Cluster) -> None:
    c = make(cluster, min_calls=5, open_duration=30.0)
    values = {f"k{i}": i for i in range(30)}
    c.set_many(values)
    cluster.stall("a")
    slow = []
    for k, v in list(values.items())[:10]:
        t0 = time.perf_counter()
        assert c.get(k) == v
        slow.append(time.perf_counter() - t0)
    assert c.dependency("a").state is State.OPEN
    fast = []
    for k, v in values.items():
        t0 = time.perf_counter()
        assert c.get(k) == v
        fast.append(time.perf_counter() - t0)
    fast.sort()
    assert max(slow) >= 0.04  # before the breaker opened, a read waited for the timeout
    assert fast[len(fast) // 2] < 0.01 and fast[-3] < 0.03  # after: no read waits for it
    assert c.status()["zones"]["a"]["up"] is False
    cluster.resume("a")
    c.close()


def test_read_repair_fills_local_zone(cluster: Cluster) -> None:
    c = make(cluster)
    c.set("k", "v")
    raw_zone(cluster, "a").delete("k")
    hits_b = cluster.counter("b", "get_hits")
    assert c.get("k") == "v"
    assert cluster.counter("b", "get_hits") == hits_b + 1
    assert raw_zone(cluster, "a").get("k") == b"v"
    assert c.stats.read_repairs["a"] == 1
    c.close()


def test_get_many_asks_remote_zones_only_for_missing_keys(cluster: Cluster) -> None:
    c = make(cluster, read_repair=False)
    keys = [f"k{i}" for i in range(10)]
    c.set_many({k: k for k in keys})
    local = raw_zone(cluster, "a")
    for k in keys[:3]:
        local.delete(k)
    before = cluster.counters("cmd_get"), cluster.counters("get_hits")
    assert c.get_many(keys) == {k: k for k in keys}
    after = cluster.counters("cmd_get"), cluster.counters("get_hits")
    asked = {z: after[0][z] - before[0][z] for z in "abc"}
    hits = {z: after[1][z] - before[1][z] for z in "abc"}
    assert asked == {"a": 10, "b": 3, "c": 0}, sorted(c.stats.requests.items())
    assert hits == {"a": 7, "b": 3, "c": 0}
    c.close()


def test_dedup_in_request_scope_threads(cluster: Cluster) -> None:
    c = make(cluster)
    c.set("hot", "v")
    before = sum(cluster.counters("cmd_get").values())
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for _ in range(n):
            results.append(c.get("hot"))

    with request_scope():
        threads = []
        for i in range(8):
            ctx = contextvars.copy_context()  # the scope follows into each thread
            t = threading.Thread(target=ctx.run, args=(worker, 3 if i < 4 else 2))
            threads.append(t)
            t.start()
        for t in threads:
            t.join(10)
    assert results == ["v"] * 20
    assert sum(cluster.counters("cmd_get").values()) - before == 1
    c.close()


async def test_dedup_in_request_scope_tasks(cluster: Cluster) -> None:
    c = AsyncReplicatedCache(cluster.spec, local_zone="a")
    await c.set("hot", "v")
    before = sum(cluster.counters("cmd_get").values())

    async def worker(n: int) -> list[Any]:
        return [await c.get("hot") for _ in range(n)]

    async with request_scope():
        got = await asyncio.gather(*(worker(3 if i < 4 else 2) for i in range(8)))
    assert [v for vs in got for v in vs] == ["v"] * 20
    assert sum(cluster.counters("cmd_get").values()) - before == 1
    await c.aclose()


async def test_async_killed_zone_and_parallel_writes(cluster: Cluster) -> None:
    c = AsyncReplicatedCache(cluster.spec, local_zone="b")
    values = {f"a{i}": i for i in range(20)}
    before = cluster.counters("cmd_set")
    for k, v in values.items():
        assert (await c.set(k, v)).ok
    after = cluster.counters("cmd_set")
    assert {z: after[z] - before[z] for z in "abc"} == {"a": 20, "b": 20, "c": 20}
    cluster.kill("b")
    assert await c.get_many(list(values)) == values
    assert all([await c.get(k) == v for k, v in values.items()])
    await c.aclose()


def test_read_through_under_cache_outage_healthy_loader(cluster: Cluster) -> None:
    c = make(cluster)
    for zone in "abc":
        cluster.kill(zone)
    calls = []
    lock = threading.Lock()

    @c.cached(key=lambda k: f"rt:{k}", loader_concurrency=10)
    def load(k: int) -> int:
        with lock:
            calls.append(k)
        time.sleep(0.2)
        return k

    barrier = threading.Barrier(50)

    def caller(i: int) -> int:
        barrier.wait()
        return load(i % 10)

    with ThreadPoolExecutor(50) as pool:
        got = list(pool.map(caller, range(50)))
    assert got == [i % 10 for i in range(50)]
    assert len(calls) <= 10
    c.close()


async def test_read_through_200_callers_bounded_loader(cluster: Cluster) -> None:
    c = AsyncReplicatedCache(cluster.spec, local_zone="a")
    for zone in "abc":
        cluster.kill(zone)
    calls = 0

    @c.cached(key=lambda k: f"rt:{k}", loader_concurrency=10)
    async def healthy(k: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return k

    got = await asyncio.gather(*(healthy(i % 10) for i in range(200)))
    assert got == [i % 10 for i in range(200)] and calls <= 10

    running = peak = 0

    @c.cached(
        key=lambda k: f"slow:{k}",
        loader_concurrency=3,
        loader_timeout=1.0,
        pool="batch",
        fallback=lambda k: -1,
    )
    async def slow(k: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.3)
        finally:
            running -= 1
        return k

    got = await asyncio.gather(*(slow(i % 10) for i in range(200)))
    assert peak <= 3
    assert set(got) <= {-1, *range(10)} and got.count(-1) > 0
    await c.aclose()


def test_bad_keys_and_big_values_write_nothing(cluster: Cluster) -> None:
    c = make(cluster)
    before = cluster.counters("cmd_set")
    with pytest.raises(InvalidKeyError):
        c.set("a key", "v")
    with pytest.raises(InvalidKeyError):
        c.set("k" * 251, "v")
    with pytest.raises(ValueTooLargeError):
        c.set("big", b"x" * 1_000_001)
    assert cluster.counters("cmd_set") == before
    assert c.set("big", b"x" * 900_000).ok  # under the limit the server takes it
    assert c.get("big") == b"x" * 900_000
    c.close()
