from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from resilience import CallTimeoutError, FaultInjectedError, protect, registry
from resilience.circuit import OUTCOMES, State
from resilience.context import FIT
from resilience.fit import Recipe, active, stats


def recipe(**fields: object) -> Recipe:
    return Recipe.from_dict({"name": "t", **fields})


def test_error_fault_goes_through_breaker_and_fallback() -> None:
    calls: list[int] = []

    @protect("ratings", fallback="fallback", min_calls=3, failure_rate=0.5)
    def ratings() -> str:
        calls.append(1)
        return "real"

    with active(recipe(faults=[{"dependency": "ratings", "error": True}])):
        assert [ratings() for _ in range(3)] == ["fallback"] * 3
    dep = registry().dependency("ratings")
    assert calls == []  # the function never ran: the fault replaced it
    shadow = dep.experiments.get("t")  # the experiment's own breaker, with ratings' policy
    assert shadow is not None
    assert shadow.window.totals().counts[OUTCOMES.index("failure")] == 3  # failures...
    assert shadow.breaker.state is State.OPEN  # ...that trip the experiment's circuit
    assert dep.window.totals().counts[OUTCOMES.index("failure")] == 0  # real traffic: untouched
    assert dep.state is State.CLOSED
    assert stats.injections[("ratings", "error")] == 3


def test_no_recipe_leaves_calls_alone_and_active_restores_context() -> None:
    @protect("ratings")
    def ratings() -> str:
        return "real"

    with active(recipe(faults=[{"dependency": "other", "error": True}])) as context:
        assert FIT.get() is context
        assert ratings() == "real"
    assert FIT.get() is None
    assert ratings() == "real"


def test_status_fault_carries_status_and_named_errors_are_raised() -> None:
    @protect("payments")
    async def payments() -> str:
        return "real"

    @protect("search")
    def search() -> str:
        return "real"

    faults = [
        {"dependency": "payments", "status": 503},
        {"dependency": "search", "error": "ConnectionResetError"},
    ]
    with active(recipe(faults=faults)):
        with pytest.raises(FaultInjectedError) as info:
            asyncio.run(payments())
        assert info.value.status == 503
        assert info.value.recipe == "t"
        assert info.value.dependency == "payments"
        with pytest.raises(ConnectionResetError, match="fault injected by recipe"):
            search()


def test_dotted_error_from_an_import_path() -> None:
    @protect("a")
    def a() -> None: ...

    spec = recipe(faults=[{"dependency": "a", "error": "asyncio.InvalidStateError"}])
    with active(spec), pytest.raises(asyncio.InvalidStateError):
        a()
    spec = recipe(faults=[{"dependency": "a", "error": "aiohttp.ClientConnectionError"}])
    with active(spec), pytest.raises(aiohttp.ClientConnectionError, match="fault injected"):
        a()


def test_short_circuited_calls_count_no_injection() -> None:
    ran: list[int] = []

    @protect("ratings", fallback="fb", isolation="semaphore", min_calls=5, failure_rate=0.5)
    def ratings() -> str:
        ran.append(1)
        return "real"

    with active(recipe(faults=[{"dependency": "ratings", "error": True}])) as context:
        assert [ratings() for _ in range(20)] == ["fb"] * 20
    dep = registry().dependency("ratings")
    assert dep.state is State.CLOSED
    assert dep.experiments.get("t").breaker.state is State.OPEN  # type: ignore[union-attr]
    # 5 calls ran the fault and opened the circuit; 15 were short-circuited: nothing applied
    assert stats.injections[("ratings", "error")] == 5
    assert context.record() == {("ratings", "error"): 5}
    assert ran == []


def test_the_request_record_counts_matches_and_applications() -> None:
    @protect("flaky", fallback="fb", min_calls=1000)
    def flaky() -> str:
        return "real"

    rolls = iter([0.9, 0.9, 0.1])
    spec = recipe(faults=[{"dependency": "flaky", "error": True, "probability": 0.5}])
    with active(spec, random=lambda: next(rolls)) as context:
        assert [flaky(), flaky()] == ["real", "real"]
        assert context.record() == {("flaky", "error"): 0}  # matched, never applied
        assert flaky() == "fb"
        context.merge({("downstream.db", "status"): 3, ("flaky", "error"): 1})
    assert context.record() == {("flaky", "error"): 2, ("downstream.db", "status"): 3}
    assert context.recipe_name == "t" and context.bulkhead_share == 0.1


def test_glob_fails_a_whole_cache_and_first_match_wins() -> None:
    hits: list[str] = []
    deps = {}
    for zone in ("a", "b"):
        name = f"cache.profile.{zone}"
        deps[name] = protect(name, fallback="miss")(lambda name=name: hits.append(name) or "hit")
    other = protect("cache.session.a", fallback="miss")(lambda: "hit")
    faults = [
        {"dependency": "cache.profile.b", "latency": 0.0},
        {"dependency": "cache.profile.*", "error": True},
    ]
    with active(recipe(faults=faults)):
        assert deps["cache.profile.a"]() == "miss"
        assert deps["cache.profile.b"]() == "hit"  # its own (zero) latency fault matched first
        assert other() == "hit"
    assert hits == ["cache.profile.b"]


def test_probability_uses_the_injected_random() -> None:
    @protect("flaky", fallback="fb", min_calls=1000)
    def flaky() -> str:
        return "real"

    rolls = iter([0.1, 0.5, 0.29, 0.3, 0.99])
    with active(
        recipe(faults=[{"dependency": "flaky", "error": True, "probability": 0.3}]),
        random=lambda: next(rolls),
    ):
        assert [flaky() for _ in range(5)] == ["fb", "real", "fb", "real", "real"]


def test_isolate_critical_fails_everything_not_listed() -> None:
    names = ["catalog", "pricing.eu", "pricing.us", "ratings", "cache.profile.a"]
    fns = {n: protect(n, fallback="fb")(lambda: "real") for n in names}
    spec = recipe(critical=["catalog", "pricing.*"], isolate_critical=True)
    with active(spec):
        got = {n: fns[n]() for n in names}
    assert got == {
        "catalog": "real",
        "pricing.eu": "real",
        "pricing.us": "real",
        "ratings": "fb",
        "cache.profile.a": "fb",
    }
    assert stats.injections[("ratings", "isolated")] == 1
    # critical listed but isolate_critical off: nothing fails
    with active(recipe(critical=["catalog"])):
        assert fns["ratings"]() == "real"


def test_explicit_fault_on_a_critical_dependency_still_fires() -> None:
    catalog = protect("catalog", fallback="fb")(lambda: "real")
    spec = recipe(
        critical=["catalog"],
        isolate_critical=True,
        faults=[{"dependency": "catalog", "error": True}],
    )
    with active(spec):
        assert catalog() == "fb"


def test_latency_fault_delays_sync_and_async_calls() -> None:
    @protect("slow-sync", timeout=2.0)
    def slow_sync() -> str:
        return "real"

    @protect("slow-async", timeout=2.0)
    async def slow_async() -> str:
        return "real"

    faults = [{"dependency": "slow-*", "latency": 0.05, "jitter": 0.02}]
    with active(recipe(faults=faults), random=lambda: 1.0):
        start = time.perf_counter()
        assert slow_sync() == "real"
        assert asyncio.run(slow_async()) == "real"
        elapsed = time.perf_counter() - start
    assert elapsed >= 2 * 0.07 - 0.005


def test_timeout_fault_fires_the_real_timeout_path() -> None:
    @protect("hang-sync", timeout=0.05)
    def hang_sync() -> str:
        return "real"

    @protect("hang-async", timeout=0.05)
    async def hang_async() -> str:
        return "real"

    @protect("hang-sem", timeout=0.05, isolation="semaphore", fallback="fb")
    def hang_sem() -> str:
        return "real"

    with active(recipe(faults=[{"dependency": "hang-*", "timeout": True}])):
        with pytest.raises(CallTimeoutError):
            hang_sync()
        with pytest.raises(CallTimeoutError):
            asyncio.run(hang_async())
        assert hang_sem() == "fb"  # returned late on the caller's thread: still a timeout
    timeout = OUTCOMES.index("timeout")
    for name in ("hang-sync", "hang-async", "hang-sem"):
        dep = registry().dependency(name)
        shadow = dep.experiments.get("t")
        assert shadow is not None and shadow.window.totals().counts[timeout] == 1, name
        assert dep.window.totals().counts[timeout] == 0, name  # the experiment's, not real


def test_recipe_follows_sync_calls_into_worker_threads_and_tasks() -> None:
    inner = protect("inner", fallback="fb")(lambda: "real")

    @protect("outer")
    def outer() -> str:
        return inner()  # runs in outer's worker thread, under the caller's context

    @protect("outer-async")
    async def outer_async() -> list[str]:
        return list(await asyncio.gather(*(asyncio.to_thread(inner) for _ in range(2))))

    with active(recipe(faults=[{"dependency": "inner", "error": True}])):
        assert outer() == "fb"
        assert asyncio.run(outer_async()) == ["fb", "fb"]
