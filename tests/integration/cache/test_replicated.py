from __future__ import annotations

import asyncio
import contextvars
import socket
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
    kw.setdefault("name", "it")
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
    c = make(cluster, open_duration=30.0)
    values = {f"k{i}": i for i in range(30)}
    c.set_many(values)
    for _ in range(10):  # heavy healthy traffic: the zone's window is full of successes
        assert c.get_many(list(values)) == values
    for k, v in values.items():
        assert c.get(k) == v
    cluster.stall("a")
    slow = []
    started = time.perf_counter()
    for k, v in values.items():
        t0 = time.perf_counter()
        assert c.get(k) == v
        slow.append(time.perf_counter() - t0)
        if c.dependency("a").state is State.OPEN:
            break
    opened_after = time.perf_counter() - started
    assert c.dependency("a").state is State.OPEN
    # three timeouts in a row (mcrouter's TKO), not the window's failure rate, opened it
    # (a read may still be answered while SIGSTOP is being delivered: count the slow ones)
    timed_out = [t for t in slow if t >= 0.04]
    assert len(timed_out) == 3 and opened_after < 1.0, (slow, opened_after)
    fast = []
    for k, v in values.items():
        t0 = time.perf_counter()
        assert c.get(k) == v
        fast.append(time.perf_counter() - t0)
    fast.sort()
    # after: no read waits for the 50 ms timeout (margins leave room for a loaded machine)
    assert fast[len(fast) // 2] < 0.01 and fast[-3] < 0.04
    assert c.status()["zones"]["a"]["up"] is False
    t0 = time.perf_counter()
    result = c.set("k0", 0)  # writes skip the zone too, and say so (every zone but one: ok)
    assert time.perf_counter() - t0 < 0.04
    assert result.ok and result.failed["a"].startswith("CircuitOpenError")
    assert result.acknowledged == ("b", "c")
    assert c.status()["zones"]["a"]["catch_up"]["pending"] == 1
    cluster.resume("a")
    c.close()


def test_incr_decr_in_every_zone(cluster: Cluster) -> None:
    c = make(cluster)
    assert c.set("n", 10).ok
    assert c.incr("n", 5) == 15
    assert c.decr("n", 3) == 12
    assert c.decr("n", 100) == 0  # memcached stops at 0
    assert c.incr("absent") is None
    assert c.get("n") == 0  # memcached pads a shrunk counter with spaces: still an int
    for zone in "abc":
        assert raw_zone(cluster, zone).get("n").rstrip() == b"0"
    raw_zone(cluster, "b").set("n", b"7")  # zones count independently; the local one answers
    assert c.incr("n") == 1
    assert raw_zone(cluster, "b").get("n") == b"8"
    with pytest.raises(ValueError):
        c.incr("n", -1)
    c.close()


def _remaining_ttl(cluster: Cluster, zone: str, key: bytes) -> int | None:
    """The key's remaining ttl in ``zone`` from memcached's meta get (-1: never expires)."""
    for server in cluster.servers[zone]:
        with socket.create_connection(("127.0.0.1", server.port), 2) as sock:
            sock.sendall(b"mg " + key + b" t\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(4096)
        if reply.startswith(b"HD"):
            return int(reply.split()[1][1:])
    return None


def test_touch_sets_a_new_ttl_in_every_zone(cluster: Cluster) -> None:
    c = make(cluster, write_policy="all")  # every zone's reply is in the result
    c.set("t", "v", ttl=5)
    assert all(0 < (_remaining_ttl(cluster, z, b"t") or 0) <= 5 for z in "abc")
    result = c.touch("t", 1000)
    assert result.ok and result.replies == {"a": True, "b": True, "c": True}
    assert all(990 <= (_remaining_ttl(cluster, z, b"t") or 0) <= 1000 for z in "abc")
    assert c.touch("t", 0).ok
    assert all(_remaining_ttl(cluster, z, b"t") == -1 for z in "abc")
    assert c.touch("absent", 60).replies == {"a": False, "b": False, "c": False}
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
    c = AsyncReplicatedCache(cluster.spec, name="it", local_zone="a")
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
    c = AsyncReplicatedCache(cluster.spec, name="it", local_zone="b")
    values = {f"a{i}": i for i in range(20)}
    before = cluster.counters("cmd_set")
    for k, v in values.items():
        assert (await c.set(k, v)).ok
    await c.wait_idle()  # all_minus_1 answers before the last zone has: let it finish
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
    c = AsyncReplicatedCache(cluster.spec, name="it", local_zone="a")
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
