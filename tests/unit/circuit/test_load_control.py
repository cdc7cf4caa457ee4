"""Adaptive concurrency limits through protect and Policy, the metrics and views of load control,
and registries given explicitly (an empty one included)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import (
    AdaptiveLimit,
    BulkheadFullError,
    ConfigError,
    Hedge,
    LimitExceededError,
    Policy,
    RateLimit,
    Registry,
    protect,
    registry,
)
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES
from resilience.metrics import ResilienceCollector
from resilience.web import circuit_view, hystrix_command


def counts(name: str, reg: Registry | None = None) -> dict[str, int]:
    dep = (reg if reg is not None else registry()).dependency(name)
    return dict(zip(OUTCOMES, dep.window.totals().counts, strict=True))


def scrape(reg: Registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    prom = CollectorRegistry()
    prom.register(ResilienceCollector(reg))
    text = generate_latest(prom).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def limit_gauge(reg: Registry, name: str) -> float:
    return scrape(reg)[("resilience_concurrency_limit", (("dependency", name),))]


class Gate:
    """Calls that block until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(5)
        finally:
            with self._lock:
                self.running -= 1
        return "done"


def wait_until(check: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


# -- adaptive limit: admission ------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["semaphore", "thread"])
def test_a_call_past_the_adaptive_limit_is_refused_at_once(isolation: str) -> None:
    limit = AdaptiveLimit("aimd", initial=2, min=1, max=10)
    gate = Gate()
    fn = protect("svc", isolation=isolation, limit=limit, timeout=5.0)(gate)
    with_fallback = protect("svc", fallback="busy")(gate)
    threads = [threading.Thread(target=fn) for _ in range(2)]
    for t in threads:
        t.start()
    dep = registry().dependency("svc")
    wait_until(lambda: gate.running == 2)
    assert dep.adaptive is not None and dep.adaptive.inflight == 2
    start = time.monotonic()
    with pytest.raises(LimitExceededError) as info:
        fn()
    assert time.monotonic() - start < 0.5  # at once, not after a wait
    err = info.value
    assert isinstance(err, BulkheadFullError) and (err.limit, err.inflight) == (2, 2)
    assert with_fallback() == "busy"
    gate.release.set()
    for t in threads:
        t.join()
    assert gate.most == 2
    c = counts("svc")
    assert c["rejected"] == 2 and c["fallback_success"] == 1 and c["success"] == 2
    assert dep.adaptive.inflight == 0


def test_the_thread_pool_follows_the_limit() -> None:
    # AIMD grows by one whenever a call ends with the pool at least half busy.
    limit = AdaptiveLimit("aimd", initial=3, min=1, max=6)
    gate = Gate()
    fn = protect("svc", limit=limit, timeout=5.0, fallback="busy")(gate)
    dep = registry().dependency("svc")
    pool = dep.pool
    assert pool is not None and pool.permits is dep.adaptive and pool.following
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(fn())) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(0.05)
    wait_until(lambda: gate.running == 3 and results.count("busy") == 2)
    assert len(pool._threads) == 3  # a worker per admitted call, none queued behind another
    gate.release.set()
    for t in threads:
        t.join()
    assert dep.adaptive is not None and dep.adaptive.limit > 3
    grown = dep.adaptive.limit
    gate.release.clear()
    results.clear()
    threads = [threading.Thread(target=lambda: results.append(fn())) for _ in range(grown)]
    for t in threads:
        t.start()
    wait_until(lambda: gate.running == grown)
    assert len(pool._threads) >= grown and "busy" not in results
    gate.release.set()
    for t in threads:
        t.join()
    assert limit_gauge(registry(), "svc") == dep.adaptive.limit


async def test_coroutines_take_the_adaptive_limit_and_may_wait_for_it() -> None:
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "done"

    refuse = protect("svc", limit=AdaptiveLimit("aimd", initial=1, min=1), fallback="busy")(slow)
    first = asyncio.ensure_future(refuse())
    await asyncio.sleep(0)
    assert await refuse() == "busy"
    release.set()
    assert await first == "done"

    release.clear()
    patient = protect("patient", limit=AdaptiveLimit("aimd", initial=1, min=1, wait=1.0))(slow)
    held = asyncio.ensure_future(patient())
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(patient())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # waits for the permit instead of being refused
    release.set()
    assert await held == await waiting == "done"
    assert counts("patient")["rejected"] == 0

    release.clear()
    brief = protect("brief", limit=AdaptiveLimit("aimd", initial=1, min=1, wait=0.02))(slow)
    held = asyncio.ensure_future(brief())
    await asyncio.sleep(0)
    with pytest.raises(LimitExceededError) as info:
        await brief()
    assert info.value.waited >= 0.015
    release.set()
    await held


def test_a_sync_caller_waits_for_a_permit_within_the_limits_wait() -> None:
    gate = Gate()
    limit = AdaptiveLimit("aimd", initial=1, min=1, wait=2.0)
    fn = protect("svc", isolation="semaphore", limit=limit, timeout=5.0)(gate)
    first = threading.Thread(target=fn)
    first.start()
    wait_until(lambda: gate.running == 1)
    done: list[str] = []
    second = threading.Thread(target=lambda: done.append(fn()))
    second.start()
    time.sleep(0.05)
    assert done == []  # waiting, not refused
    gate.release.set()
    first.join()
    second.join()
    assert done == ["done"] and gate.most == 1


# -- adaptive limit: what it learns --------------------------------------------------------------


def test_timeouts_and_failures_are_drops_ignored_errors_are_not() -> None:
    class BadRequest(Exception):
        pass

    limit = AdaptiveLimit("aimd", initial=10, min=1, max=10, backoff_ratio=0.5)
    dep = registry().dependency("svc", isolation="semaphore", limit=limit, timeout=0.01)
    adaptive = dep.adaptive
    assert adaptive is not None

    def fail() -> None:
        raise ConnectionError()

    def bad() -> None:
        raise BadRequest()

    with pytest.raises(ConnectionError):
        dep.call(fail)
    assert adaptive.limit == 5  # a failure: backed off
    with pytest.raises(BadRequest):
        dep.guard(ignore=BadRequest).call(bad, None, (), {})
    assert adaptive.limit == 5  # a bad request says nothing about the dependency's load
    with pytest.raises(Exception, match="timed out"):
        dep.call(lambda: time.sleep(0.02))  # returned late on the caller's thread: a timeout
    assert adaptive.limit == 2
    assert adaptive.inflight == 0


async def test_a_coroutine_timeout_is_a_drop() -> None:
    dep = registry().dependency(
        "svc", limit=AdaptiveLimit("aimd", initial=8, min=1, backoff_ratio=0.5), timeout=0.01
    )

    async def hang() -> None:
        await asyncio.sleep(1)

    with pytest.raises(Exception, match="timed out"):
        await dep.acall(hang)
    assert dep.adaptive is not None and dep.adaptive.limit == 4


def test_the_limit_and_in_flight_show_in_metrics_views_and_the_stream() -> None:
    reg = registry()
    limit = AdaptiveLimit("aimd", initial=7, min=2, max=50)
    dep = reg.dependency("svc", isolation="semaphore", limit=limit)
    fixed = reg.dependency("fixed", isolation="semaphore", max_concurrent=12)
    dep.call(lambda: "ok")
    assert limit_gauge(reg, "svc") == 7
    assert limit_gauge(reg, "fixed") == 12
    view = circuit_view(dep)["limit"]
    assert view["kind"] == "adaptive" and view["algorithm"] == "aimd"
    assert (view["limit"], view["inflight"], view["min"], view["max"]) == (7, 0, 2, 50)
    assert view["rtt_ms"] is not None and view["rtt_ms"] >= 0
    assert circuit_view(fixed)["limit"] == {"kind": "fixed", "limit": 12, "inflight": 0}
    assert circuit_view(dep)["policy"]["limit"]["algorithm"] == "aimd"
    message = hystrix_command(dep)
    assert message["propertyValue_executionIsolationSemaphoreMaxConcurrentRequests"] == 7
    vegas = reg.dependency("v", isolation="semaphore", limit=AdaptiveLimit(window=1))
    for _ in range(3):
        vegas.call(lambda: "ok")
    assert circuit_view(vegas)["limit"]["baseline_ms"] is not None


def test_rate_limit_and_hedges_show_in_the_view() -> None:
    with rtesting.fake_clock():
        dep = registry().dependency("svc", isolation="semaphore", rate_limit=RateLimit(4))
        dep.call(lambda: "ok")
        view = circuit_view(dep)
    assert view["rate_limit"] == {"rate": 4, "per": 1.0, "burst": 4.0, "available": 3.0}
    assert view["hedges"] == {"sent": 0, "won": 0, "budget_exhausted": 0}


# -- configuration ------------------------------------------------------------------------------


def test_limit_and_rate_limit_are_validated_policy_fields() -> None:
    with pytest.raises(ConfigError) as info:
        Policy(limit=20)  # type: ignore[arg-type]
    assert info.value.field == "limit" and "AdaptiveLimit" in str(info.value)
    with pytest.raises(ConfigError) as info:
        protect("svc", rate_limit=100)
    assert info.value.field == "rate_limit"
    registry().dependency("svc", limit=AdaptiveLimit("vegas"))
    with pytest.raises(ConfigError) as info:
        registry().dependency("svc", limit=AdaptiveLimit("aimd"))
    assert info.value.field == "limit" and "differs in: limit" in str(info.value)
    assert registry().dependency("svc", limit=AdaptiveLimit("vegas")).adaptive is not None


def test_the_limit_can_change_at_runtime() -> None:
    dep = registry().dependency("svc", isolation="semaphore")
    assert dep.adaptive is None and dep.limiter is dep.permits
    dep.update_policy(limit=AdaptiveLimit("aimd", initial=30))
    first = dep.adaptive
    assert first is not None and dep.limiter is first
    dep.update_policy(timeout=2.0)  # an unrelated change keeps the limiter and what it learnt
    assert dep.adaptive is first
    dep.update_policy(limit=None)
    assert dep.adaptive is None and dep.limiter is dep.permits
    dep.update_policy(rate_limit=RateLimit(5))
    assert dep.rate_limiter is not None and not dep.lane
    dep.update_policy(rate_limit=None)
    assert dep.rate_limiter is None


def test_hedging_a_sync_function_under_semaphore_isolation_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        protect("svc", isolation="semaphore", hedge=Hedge())(lambda: 1)
    assert info.value.field == "hedge" and "caller's thread" in str(info.value)
    with pytest.raises(ConfigError, match="hedge"):
        protect("svc2", hedge=3)  # type: ignore[arg-type]


# -- registries given explicitly ----------------------------------------------------------------


def test_protect_uses_the_registry_it_is_given_even_an_empty_one() -> None:
    mine = Registry()
    assert len(mine) == 0  # empty, so falsy: it must still be the one used
    fn = protect("svc", isolation="semaphore", registry=mine)(lambda: "ok")
    assert fn() == "ok"
    assert mine.get("svc") is not None
    assert registry().get("svc") is None
    with pytest.raises(ConfigError, match="registry"):
        protect("svc", registry="default")  # type: ignore[arg-type]


def test_a_collector_reads_the_registry_it_is_given_even_an_empty_one() -> None:
    registry().dependency("default-only").call(lambda: 1)
    empty = Registry()
    assert not any(
        name == "resilience_calls_total" for name, _ in scrape(empty)
    )  # nothing from the default registry
    empty.dependency("mine", isolation="semaphore").call(lambda: 1)
    samples = scrape(empty)
    key = ("resilience_calls_total", (("dependency", "mine"), ("outcome", "success")))
    assert samples[key] == 1
    assert all(dict(labels).get("dependency") != "default-only" for _, labels in samples)


def test_testing_helpers_use_the_registry_they_are_given_even_an_empty_one() -> None:
    mine = Registry()
    with rtesting.fake_clock(reg=mine) as clock:
        dep = mine.dependency("svc")
        assert dep._clock is clock
    with rtesting.forced("svc", "open", reg=Registry()):
        assert registry().get("svc") is None


def test_a_bound_method_can_be_protected_and_keeps_its_guard() -> None:
    class Client:
        def fetch(self, x: int) -> int:
            return 2 * x

    fn = protect("svc", isolation="semaphore")(Client().fetch)
    assert fn(21) == 42
    assert fn.__resilience_guard__.dependency is registry().dependency("svc")  # type: ignore[attr-defined]
