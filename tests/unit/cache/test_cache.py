from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import resilience.cache as cache_pkg
from resilience import context, request_scope
from resilience.cache import JsonSerde, PickleSerde, WriteResult
from resilience.circuit import OUTCOMES, State, registry
from resilience.errors import (
    CacheWriteError,
    ConfigError,
    FaultInjectedError,
    InvalidKeyError,
    ValueTooLargeError,
)
from resilience.metrics import ResilienceCollector

from . import fakes
from .fakes import ZONES, AsyncFakeCache, FakeCache, fail_zone, zone_gets, zone_has, zone_servers


def make(**kw: Any) -> FakeCache:
    kw.setdefault("local_zone", "a")
    kw.setdefault("name", "default")
    return FakeCache(ZONES, **kw)


def test_exports_sorted_and_complete() -> None:
    assert cache_pkg.__all__ == sorted(cache_pkg.__all__)
    for name in (
        "ReplicatedCache",
        "AsyncReplicatedCache",
        "WriteResult",
        "JsonSerde",
        "PickleSerde",
    ):
        assert name in cache_pkg.__all__


def test_set_writes_every_zone_and_get_reads_local_first() -> None:
    c = make()
    result = c.set("user:1", {"name": "Ada"})
    assert isinstance(result, WriteResult) and result.ok
    assert set(result.acknowledged) == {"a", "b", "c"} and not result.failed
    assert all(zone_has(z, b"user:1") for z in "abc")
    assert c.get("user:1") == {"name": "Ada"}
    assert (zone_gets("a"), zone_gets("b"), zone_gets("c")) == (1, 0, 0)


def test_native_values_round_trip() -> None:
    c = make()
    for i, value in enumerate([b"\x00raw", "text é", 42, [1, "x"], {"k": None}, 1.5, True]):
        c.set(f"k{i}", value)
        got = c.get(f"k{i}")
        assert got == value and type(got) is type(value)


def test_read_falls_back_to_remote_zone_on_failure_and_on_miss() -> None:
    c = make(read_repair=False)
    c.set("k", "v")
    fail_zone("a")
    assert c.get("k") == "v"
    fail_zone("a", False)
    for s in zone_servers("a"):
        s.data.clear()
    assert c.get("k") == "v"
    assert c.stats.remote_hits["b"] == 2


def test_read_order_is_configurable() -> None:
    c = make(read_order=["c", "b"], read_repair=False)
    c.set("k", "v")
    for s in zone_servers("a"):
        s.data.clear()
    assert c.get("k") == "v"
    assert zone_gets("c") == 1 and zone_gets("b") == 0


def test_read_repair_adds_remote_hit_to_local_zone() -> None:
    c = make()
    c.set("k", "v")
    for s in zone_servers("a"):
        s.data.clear()
    assert c.get("k") == "v"
    assert zone_has("a", b"k")
    assert c.stats.read_repairs["a"] == 1


def test_read_repair_can_be_turned_off() -> None:
    c = make(read_repair=False)
    c.set("k", "v")
    for s in zone_servers("a"):
        s.data.clear()
    assert c.get("k") == "v"
    assert not zone_has("a", b"k")


def test_get_many_asks_remote_zones_only_for_missing_keys() -> None:
    c = make(read_repair=False)
    c.set_many({f"k{i}": i for i in range(10)})
    for s in zone_servers("a"):
        for k in (b"k1", b"k2", b"k3"):
            s.data.pop(k, None)
    before = zone_gets("a"), zone_gets("b"), zone_gets("c")
    got = c.get_many([f"k{i}" for i in range(10)] + ["absent"])
    assert got == {f"k{i}": i for i in range(10)}
    assert zone_gets("a") - before[0] == 11
    assert zone_gets("b") - before[1] == 4  # k1..k3 and "absent"
    assert zone_gets("c") - before[2] == 1  # only "absent" is still missing


@pytest.mark.parametrize(
    ("policy", "failing", "ok"),
    [
        ("all", "c", False),
        ("all", None, True),
        ("all_minus_1", "c", True),
        ("all_minus_1", "a", True),
        ("quorum", "c", True),
        ("local", "b", True),
        ("local", "a", False),
    ],
)
def test_write_policies(policy: str, failing: str | None, ok: bool) -> None:
    c = make(write_policy=policy)
    if failing:
        fail_zone(failing)
    if ok:
        result = c.set("k", "v")
        assert result.ok
    else:
        with pytest.raises(CacheWriteError) as info:
            c.set("k", "v")
        result = info.value.result
        assert isinstance(result, WriteResult) and not result.ok
    if failing:
        # a failed zone write is counted and reported, never dropped silently
        c.close()
        assert c.stats.write_failures[failing] == 1
        assert failing in result.failed or failing in result.pending


def test_quorum_fails_when_two_of_three_zones_fail() -> None:
    c = make(write_policy="quorum")
    fail_zone("b")
    fail_zone("c")
    with pytest.raises(CacheWriteError):
        c.set("k", "v")


def test_add_delete_touch_incr_decr() -> None:
    c = make()
    assert c.add("k", "v").replies == {"a": True, "b": True, "c": True}
    assert c.add("k", "w").replies == {"a": False, "b": False, "c": False}
    assert c.get("k") == "v"
    assert c.touch("k", 60).replies["a"] is True
    assert c.delete("k").replies["b"] is True
    assert c.get("k") is None
    c.set("n", 10)
    assert c.incr("n", 5) == 15
    assert c.decr("n") == 14
    assert c.get("n") == 14
    assert c.incr("absent") is None
    c.set_many({"x": 1, "y": 2})
    c.delete_many(["x", "y"])
    assert c.get_many(["x", "y"]) == {}


def test_bad_keys_and_oversized_values_raise_and_write_nothing() -> None:
    c = make(max_value_size=100)
    for key in ("has space", "x" * 251, "ctl\x01", ""):
        with pytest.raises(InvalidKeyError) as info:
            c.set(key, "v")
        assert info.value.key == key
    with pytest.raises(ValueTooLargeError) as big:
        c.set("k", "x" * 101)
    assert big.value.size == 101 and big.value.limit == 100
    assert all(s.sets == 0 for z in "abc" for s in zone_servers(z))


def test_hash_long_keys_hashes_instead_of_raising() -> None:
    c = make(hash_long_keys=True)
    c.set("x" * 300, "long")
    c.set("with space", "spaced")
    assert c.get("x" * 300) == "long"
    assert c.get("with space") == "spaced"
    assert c.get_many(["with space"]) == {"with space": "spaced"}


def test_pickle_only_when_asked() -> None:
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    plain = make()
    with pytest.raises(Exception, match="JSON"):
        plain.set("p", Point(1))
    pickled = FakeCache(ZONES, name="p", serde=PickleSerde())
    pickled.set("p", {1, 2})
    assert pickled.get("p") == {1, 2}
    assert plain.get("p") is None  # undecodable here: a miss, counted, never an error
    assert plain.stats.requests[("a", "get", "undecodable")] == 1
    assert repr(JsonSerde()) == "JsonSerde()"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"zones": {}}, "zones"),
        ({"local_zone": "z"}, "local_zone"),
        ({"read_order": ["a"]}, "read_order"),
        ({"write_policy": "most"}, "write_policy"),
        ({"timeout": 0}, "timeout"),
        ({"default_ttl": -1}, "default_ttl"),
        ({"serde": object()}, "serde"),
        ({"max_value_size": 0}, "max_value_size"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    zones = kwargs.pop("zones", ZONES)
    with pytest.raises(ConfigError) as info:
        FakeCache(zones, name="cfg", **kwargs)
    assert info.value.field == field


def test_zones_are_circuit_dependencies_that_open_and_are_skipped() -> None:
    c = make(min_calls=5)
    c.set("k", "v")
    fail_zone("a")
    for _ in range(6):
        assert c.get("k") == "v"
    dep = registry().get("cache.default.a")
    assert dep is not None and dep.state is State.OPEN
    gets_before = sum(s.gets for s in zone_servers("a"))
    fail_zone("a", False)
    assert c.get("k") == "v"
    assert sum(s.gets for s in zone_servers("a")) == gets_before  # skipped at once
    assert c.status()["zones"]["a"]["up"] is False


class _Raise:
    def __init__(self, name: str) -> None:
        self.name = name

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def failing(*a: Any, **k: Any) -> Any:
            raise FaultInjectedError(self.name, "test-recipe")

        return failing

    def wrap_async(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        async def failing(*a: Any, **k: Any) -> Any:
            raise FaultInjectedError(self.name, "test-recipe")

        return failing


class FaultStub:
    """A FIT context failing every dependency whose name matches a glob."""

    recipe_name = "test-recipe"
    bulkhead_share = 1.0

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def fault_for(self, dependency: str) -> _Raise | None:
        return _Raise(dependency) if fnmatch.fnmatch(dependency, self.pattern) else None


def test_fit_recipe_fails_one_zone_through_the_injection_point() -> None:
    c = FakeCache(ZONES, name="profile", local_zone="b", read_repair=False)
    c.set("k", "v")
    token = context.FIT.set(FaultStub("cache.profile.b"))
    try:
        assert c.get("k") == "v"
        result = c.set("k2", "v2")  # every zone but one took it: done, and reported
    finally:
        context.FIT.reset(token)
    assert result.ok and result.degraded and set(result.failed) == {"b"}
    assert c.stats.degraded_writes == 1
    assert c.stats.requests[("b", "get", "error")] == 1
    assert c.stats.remote_hits["a"] == 1


def test_fit_recipe_fails_the_whole_cache_with_a_glob() -> None:
    c = FakeCache(ZONES, name="profile")
    c.set("k", "v")
    token = context.FIT.set(FaultStub("cache.profile.*"))
    try:
        assert c.get("k", "fallback") == "fallback"
    finally:
        context.FIT.reset(token)
    assert all(c.stats.requests[(z, "get", "error")] == 1 for z in "abc")


def test_request_scope_dedups_gets_and_follows_writes() -> None:
    c = make()
    c.set("k", "v")
    with request_scope():
        assert [c.get("k") for _ in range(5)] == ["v"] * 5
        assert zone_gets("a") == 1
        c.set("k", "w")
        assert c.get("k") == "w"
        c.delete("k")
        assert c.get("k") is None
        assert c.get_many(["k", "m"]) == {}
        assert c.get_many(["k", "m"]) == {}
    assert zone_gets("a") == 2  # "m" once; "k" answered by the memo after the delete
    assert c.get("absent") is None and c.get("absent") is None
    assert zone_gets("a") == 4  # outside a scope nothing is kept


def test_single_flight_across_threads_shares_one_fetch() -> None:
    c = make()
    c.set("k", "v")
    release = threading.Event()
    started = threading.Event()
    calls = []
    for s in zone_servers("a"):

        def slow(payload: bytes, _orig: Any = s.handle) -> Any:
            calls.append(payload)
            started.set()
            release.wait(2)
            return _orig(payload)

        s.handle = slow  # type: ignore[method-assign]
    results: list[Any] = []
    with request_scope():
        threads = []
        for _ in range(8):
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(lambda: results.append(c.get("k")),))
            threads.append(t)
            t.start()
        assert started.wait(2)
        release.set()
        for t in threads:
            t.join(5)
    assert results == ["v"] * 8
    assert len(calls) == 1
    assert c.stats.singleflight_shares + c.stats.dedup_hits == 7


def test_status_is_json_and_metrics_are_exported() -> None:
    c = make()
    c.set("k", "v")
    c.get("k")
    c.get("nope")
    status = c.status()
    json.dumps(status)
    assert status["local_zone"] == "a" and status["write_policy"] == "all_minus_1"
    assert status["zones"]["a"]["state"] == "closed"
    assert status["zones"]["a"]["hits"] == 1 and status["zones"]["a"]["misses"] == 1
    assert status["zones"]["a"]["hit_ratio"] == 0.5 and status["zones"]["a"]["errors"] == 0
    prom = CollectorRegistry()
    prom.register(ResilienceCollector(registry()))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(prom).decode())}
    hits = [
        s
        for s in families["resilience_cache_requests"].samples
        if s.labels == {"cache": "default", "zone": "a", "op": "get", "result": "hit"}
    ]
    assert hits and hits[0].value == 1
    up = {s.labels["zone"]: s.value for s in families["resilience_cache_zone_up"].samples}
    assert up == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_read_through_loads_once_and_uses_fallback_without_caching_it() -> None:
    c = make()
    loads = []

    @c.cached(key=lambda uid: f"user:{uid}", ttl=60)
    def load(uid: int) -> dict[str, int]:
        loads.append(uid)
        return {"id": uid}

    assert load(1) == {"id": 1} and load(1) == {"id": 1}
    assert loads == [1]

    @c.cached(key=lambda uid: f"other:{uid}", pool="batch", fallback=lambda uid: {"id": -1})
    def broken(uid: int) -> dict[str, int]:
        raise RuntimeError("db down")

    assert broken(2) == {"id": -1}
    assert c.get("other:2") is None
    assert registry().get("cache.default.loader.batch") is not None


async def test_async_cache_same_api() -> None:
    c = AsyncFakeCache(ZONES, name="default", local_zone="b", write_policy="all")
    result = await c.set("k", [1, 2])
    assert result.ok and set(result.acknowledged) == {"a", "b", "c"}
    assert await c.get("k") == [1, 2]
    assert await c.get_many(["k", "x"]) == {"k": [1, 2]}
    fail_zone("b")
    assert await c.get("k") == [1, 2]
    with pytest.raises(CacheWriteError):
        await c.set("k", 1)
    fail_zone("b", False)
    assert (await c.add("new", 1)).replies["b"] is True
    assert await c.incr("new", 2) == 3
    assert (await c.delete("new")).ok
    await c.aclose()


async def test_async_dedup_across_tasks_and_fit() -> None:
    c = AsyncFakeCache(ZONES, name="profile", local_zone="a")
    await c.set("k", "v")
    async with request_scope():
        got = await asyncio.gather(*(c.get("k") for _ in range(20)))
    assert got == ["v"] * 20
    assert zone_gets("a") == 1
    token = context.FIT.set(FaultStub("cache.profile.a"))
    try:
        assert await c.get("k") == "v"
    finally:
        context.FIT.reset(token)
    assert c.stats.requests[("a", "get", "error")] == 1


async def test_async_read_through_single_flight() -> None:
    c = AsyncFakeCache(ZONES, name="default")
    calls = 0

    @c.cached(key=lambda k: f"rt:{k}")
    async def load(k: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return k * 10

    got = await asyncio.gather(*(load(i % 5) for i in range(50)))
    assert got == [(i % 5) * 10 for i in range(50)]
    assert calls == 5


# -- pipelined writes (sync) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "call"),
    [
        ("set", lambda c: c.set("k", "v")),
        ("set_many", lambda c: c.set_many({f"k{i}": i for i in range(8)})),
        ("add", lambda c: c.add("new", 1)),
        ("delete", lambda c: c.delete("k")),
        ("delete_many", lambda c: c.delete_many([f"k{i}" for i in range(8)])),
        ("touch", lambda c: c.touch("k", 60)),
        ("incr", lambda c: c.incr("n", 2)),
    ],
)
def test_writes_are_pipelined_send_to_every_zone_then_read(
    op: str, call: Callable[[FakeCache], Any]
) -> None:
    c = make()
    c.set("n", 1)
    fakes.EVENTS.clear()
    call(c)
    kinds = [kind for kind, _ in fakes.EVENTS]
    sends = kinds.count("send")
    assert sends >= 3 and kinds == ["send"] * sends + ["receive"] * sends, kinds
    sent_to = {server for kind, server in fakes.EVENTS if kind == "send"}
    assert all(any(s in sent_to for s in zone_servers(z)) for z in "abc")
    if op in ("set_many", "delete_many"):  # 8 keys over 2 servers a zone: both asked at once
        assert sends == 6


def test_open_zone_is_skipped_by_writes_and_reported() -> None:
    c = make(write_policy="quorum")
    c.dependency("c").force_open()
    result = c.set("k", "v")
    assert result.ok and result.acknowledged == ("a", "b")
    assert result.failed["c"].startswith("CircuitOpenError")
    assert all(s.sets == 0 for s in zone_servers("c"))
    assert c.stats.write_failures["c"] == 1
    assert all(c.dependency(z).permits.in_use == 0 for z in "abc")


def test_quorum_write_returns_before_a_slow_zone_which_is_counted_later() -> None:
    c = make(write_policy="quorum", timeout=2.0)
    gate = threading.Event()
    for s in zone_servers("c"):
        s.gate = gate
    result = c.set("k", "v")
    assert result.ok and result.pending == ("c",)
    assert not zone_has("c", b"k")
    gate.set()
    c.close()  # waits for the write worker that reads zone c's reply
    assert zone_has("c", b"k")
    assert c.stats.requests[("c", "set", "ok")] == 1
    assert c.dependency("c").permits.in_use == 0


def test_write_reply_past_the_timeout_is_a_zone_timeout() -> None:
    c = make(timeout=0.01, write_policy="all")
    for s in zone_servers("c"):
        s.gate = threading.Event()  # never set: the read times out
    with pytest.raises(CacheWriteError) as info:
        c.set("k", "v")
    assert info.value.result.failed["c"].startswith("CallTimeoutError")
    assert info.value.result.acknowledged == ("a", "b")
    timeouts = c.dependency("c").window.totals().count(OUTCOMES.index("timeout"))
    assert timeouts == 1
    assert all(c.dependency(z).permits.in_use == 0 for z in "abc")


class _Hang:
    """A FIT fault that delays the call by ``factor`` times the dependency's timeout."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        def slow(*a: Any, **k: Any) -> Any:
            time.sleep(timeout * self.factor)
            return fn(*a, **k)

        return slow

    def wrap_async(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        raise NotImplementedError


class _FaultFor:
    recipe_name = "test-recipe"
    bulkhead_share = 1.0

    def __init__(self, name: str, fault: Any) -> None:
        self.name, self.fault = name, fault

    def fault_for(self, dependency: str) -> Any:
        return self.fault if dependency == self.name else None


def test_fit_delay_on_a_zone_write_under_and_past_the_timeout() -> None:
    c = FakeCache(ZONES, name="fit", local_zone="a", timeout=0.02, write_policy="all")
    token = context.FIT.set(_FaultFor("cache.fit.b", _Hang(0.1)))
    try:
        assert c.set("k", "v").acknowledged == ("a", "b", "c")  # late, not too late
    finally:
        context.FIT.reset(token)
    token = context.FIT.set(_FaultFor("cache.fit.b", _Hang(2.0)))
    try:
        with pytest.raises(CacheWriteError) as info:
            c.set("k", "w")
    finally:
        context.FIT.reset(token)
    assert info.value.result.failed["b"].startswith("CallTimeoutError")
    zone_b = c.dependency("b")
    shadow = zone_b.experiments.get("test-recipe")  # an injected timeout is the experiment's
    assert shadow is not None and shadow.window.totals().count(OUTCOMES.index("timeout")) == 1
    assert zone_b.window.totals().count(OUTCOMES.index("timeout")) == 0
    assert zone_b.permits.in_use == 0


def test_three_failures_in_a_row_open_a_zone_behind_healthy_traffic() -> None:
    c = make()
    c.set("k", "v")
    for _ in range(100):
        assert c.get("k") == "v"
    fail_zone("a")
    for _ in range(3):
        assert c.get("k") == "v"
    assert c.dependency("a").state is State.OPEN
    fail_zone("a", False)
    # the same with the trigger off: 3 failures among 100 successes leave the zone closed
    off = FakeCache(ZONES, name="off", local_zone="a", consecutive_failures=None)
    for _ in range(100):
        assert off.get("k") == "v"
    fail_zone("a")
    for _ in range(3):
        assert off.get("k") == "v"
    assert off.dependency("a").state is State.CLOSED


# -- issue 13/15: decoration-time errors, signatures, names, status shape -------------------


def test_cached_refuses_the_wrong_kind_of_loader_at_decoration_time() -> None:
    import functools

    sync_cache = make()
    async_cache = AsyncFakeCache(ZONES, name="default")

    async def aload(uid: int) -> int:
        return uid

    def load(uid: int) -> int:
        return uid

    for wrong in (aload, functools.partial(aload)):
        with pytest.raises(ConfigError) as info:
            sync_cache.cached(key=str)(wrong)
        assert info.value.field == "cached" and "AsyncReplicatedCache" in str(info.value)
    with pytest.raises(ConfigError, match=r"ReplicatedCache\.cached"):
        async_cache.cached(key=str)(load)


def test_cache_classes_show_their_real_keyword_signature() -> None:
    import inspect

    for cls in (cache_pkg.ReplicatedCache, cache_pkg.AsyncReplicatedCache):
        params = inspect.signature(cls).parameters
        assert "args" not in params and "kwargs" not in params
        assert params["name"].default is inspect.Parameter.empty  # required
        assert params["name"].kind is inspect.Parameter.KEYWORD_ONLY
        for option in ("local_zone", "timeout", "write_policy", "acquire_timeout", "batch_window"):
            assert option in params
    with pytest.raises(TypeError, match="name"):
        FakeCache(ZONES)  # type: ignore[call-arg]


def test_two_caches_one_name_different_zones_is_a_config_error() -> None:
    first = make(name="users")
    twin = make(name="users")  # same zones: allowed, they share the zones' breakers
    other = {"a": ["10.9.9.9:11211"]}
    with pytest.raises(ConfigError) as info:
        FakeCache(other, name="users")
    assert info.value.field == "name"
    assert FakeCache(other, name="users2").name == "users2"
    first.close()
    twin.close()
    assert FakeCache(other, name="users").name == "users"  # closed caches free their name


def test_status_zone_shape_for_the_dashboard() -> None:
    c = make()
    c.set("k", "v")
    c.get("k")
    fail_zone("b")
    c.set("k2", "v")
    zone = c.status()["zones"]["b"]
    for key in ("state", "hit_ratio", "errors", "catch_up", "in_flight", "acquire_timeouts"):
        assert key in zone
    assert zone["errors"] == 1 and zone["catch_up"]["pending"] == 1
    assert zone["catch_up"]["held"] == 0
    assert "hit_rate" not in zone  # the dashboard reads hit_ratio; the old alias is gone
    assert c.status()["zones"]["a"]["hit_ratio"] == 1.0
    assert c.status()["degraded_writes"] == 1


def test_all_minus_1_waits_for_the_local_zone_before_returning() -> None:
    c = make(timeout=2.0)
    gate = threading.Event()
    for s in zone_servers("a"):
        s.gate = gate
    threading.Timer(0.05, gate.set).start()
    t0 = time.monotonic()
    result = c.set("k", "v")  # b and c answer first; the local zone a is still waited for
    assert time.monotonic() - t0 >= 0.04
    assert "a" in result.acknowledged and result.ok
    assert c.get("k") == "v"


async def test_async_callers_past_the_zone_limit_wait_instead_of_missing() -> None:
    c = AsyncFakeCache(ZONES, name="narrow", max_concurrent=2, batch_window=None)
    await c.set("k", "v")
    got = await asyncio.gather(*(c.get("k") for _ in range(50)))
    assert got == ["v"] * 50
    assert c.stats.acquire_timeouts == {"a": 0, "b": 0, "c": 0}
    assert zone_gets("b") == 0  # never failed over: every caller waited for zone a


async def test_async_waiting_past_acquire_timeout_skips_the_zone_uncounted() -> None:
    c = AsyncFakeCache(
        ZONES, name="tiny", max_concurrent=1, batch_window=None, acquire_timeout=0.001
    )
    await c.set("k", "v")
    gate = c._zones["a"].gate
    gate.try_acquire()  # someone holds zone a's only permit
    assert await c.get("k") == "v"  # zone b answered
    gate.release()
    assert c.stats.acquire_timeouts["a"] == 1
    assert c.dependency("a").window.totals().count(OUTCOMES.index("failure")) == 0
    assert c.dependency("a").state is State.CLOSED
