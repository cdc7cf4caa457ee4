"""The Prometheus contract of the circuit families (README "Prometheus"), read at scrape time."""

from __future__ import annotations

import asyncio

import pytest
import tenacity
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import Retry, metrics, protect, registry
from resilience import testing as rtesting

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Boom(Exception):
    pass


def scrape() -> Samples:
    reg = CollectorRegistry()
    reg.register(metrics.ResilienceCollector(registry()))
    out = {}
    for family in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def calls(m: Samples, dep: str) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: v
        for (name, labels), v in m.items()
        if name == "resilience_calls_total" and dict(labels)["dependency"] == dep
    }


def test_each_caller_call_counts_once_and_fallbacks_have_their_own_counter() -> None:
    @protect("ratings", isolation="semaphore", fallback=0, min_calls=3, max_concurrent=7)
    def ratings(ok: bool) -> int:
        if not ok:
            raise Boom()
        return 1

    for ok in (True, True, False, False, False, True):
        ratings(ok)
    m = scrape()
    dep = (("dependency", "ratings"),)
    # two failures after two successes reach the 0.5 failure rate over min_calls=3 and open
    # the circuit; the last two calls are short-circuited
    assert calls(m, "ratings") == {
        "success": 2,
        "failure": 2,
        "timeout": 0,
        "short_circuited": 2,
        "rejected": 0,
        "rate_limited": 0,
        "ignored": 0,
    }
    assert sum(calls(m, "ratings").values()) == 6  # one per caller call, fallbacks or not
    assert m[("resilience_fallbacks_total", (*dep, ("outcome", "success")))] == 4
    assert m[("resilience_fallbacks_total", (*dep, ("outcome", "failure")))] == 0
    assert m[("resilience_call_duration_seconds_count", dep)] == 4
    assert m[("resilience_call_duration_seconds_bucket", (*dep, ("le", "+Inf")))] == 4
    assert m[("resilience_circuit_state", (*dep, ("state", "open")))] == 1
    assert m[("resilience_circuit_state", (*dep, ("state", "closed")))] == 0
    assert m[("resilience_circuit_opened_total", dep)] == 1
    assert m[("resilience_circuit_failure_ratio", dep)] == pytest.approx(0.5)
    assert m[("resilience_circuit_slow_call_ratio", dep)] == 0


def test_a_retried_call_counts_once_by_its_last_attempt() -> None:
    outcomes = [ConnectionError(), ConnectionError(), "ok"]

    @protect("svc", isolation="semaphore", retry=Retry(attempts=3, wait=tenacity.wait_none()))
    def flaky() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert flaky() == "ok"
    m = scrape()
    dep = (("dependency", "svc"),)
    assert calls(m, "svc")["success"] == 1 and calls(m, "svc")["failure"] == 0
    assert m[("resilience_retries_total", (*dep, ("outcome", "attempted")))] == 2
    assert m[("resilience_retries_total", (*dep, ("outcome", "budget_exhausted")))] == 0
    # ... while the breaker's window saw every attempt
    assert m[("resilience_circuit_failure_ratio", dep)] == pytest.approx(2 / 3)
    assert m[("resilience_call_duration_seconds_count", dep)] == 3


def test_a_retried_call_that_gives_up_counts_its_last_outcome() -> None:
    with rtesting.fake_clock() as clock:

        @protect(
            "svc",
            isolation="semaphore",
            timeout=0.5,
            min_calls=100,
            fallback="fb",
            retry=Retry(attempts=2, wait=tenacity.wait_none(), on=(OSError, TimeoutError)),
        )
        def failing(late: list[bool]) -> str:
            if late.pop(0):
                clock.advance(1.0)
                return "late"
            raise ConnectionError()

        assert failing([False, True]) == "fb"
    c = calls(scrape(), "svc")
    assert (c["failure"], c["timeout"]) == (0, 1)


def test_ignored_calls_are_their_own_outcome() -> None:
    bad = protect("svc", isolation="semaphore", ignore=KeyError)(
        lambda: (_ for _ in ()).throw(KeyError())
    )
    with pytest.raises(KeyError):
        bad()
    assert calls(scrape(), "svc")["ignored"] == 1


def test_limits_one_unit_per_name() -> None:
    protect("sem", isolation="semaphore", max_concurrent=7, timeout=0.25, failure_rate=0.4)(
        lambda: 1
    )()
    protect("pool", pool_size=3, queue_size=2, timeout=2.0)(lambda: 1)
    m = scrape()
    sem, pool = (("dependency", "sem"),), (("dependency", "pool"),)
    assert m[("resilience_timeout_seconds", sem)] == 0.25
    assert m[("resilience_concurrency_limit", sem)] == 7
    assert m[("resilience_circuit_failure_ratio_threshold", sem)] == 0.4
    assert m[("resilience_timeout_seconds", pool)] == 2.0
    assert m[("resilience_concurrency_limit", pool)] == 3
    assert m[("resilience_queue_limit", pool)] == 2
    assert not any(name == "resilience_limit" for name, _ in m)


async def test_thread_pool_gauges_only_for_dependencies_with_a_pool() -> None:
    @protect("pooled", pool_size=3, queue_size=2)
    def sync_call() -> int:
        return 1

    @protect("coro", max_concurrent=4)
    async def async_call() -> int:
        await asyncio.sleep(0)
        return 1

    await async_call()
    m = scrape()
    pooled, coro = (("dependency", "pooled"),), (("dependency", "coro"),)
    for name in (
        "resilience_pool_active_workers",
        "resilience_pool_queued_calls",
        "resilience_pool_abandoned_workers",
        "resilience_queue_limit",
    ):
        assert (name, pooled) in m  # declared by the decorator, before any call
        assert (name, coro) not in m
    assert m[("resilience_concurrency_limit", coro)] == 4
    assert m[("resilience_concurrent_calls", coro)] == 0


def test_extra_sources_are_collected() -> None:
    class Source:
        def collect_metrics(self):  # type: ignore[no-untyped-def]
            g = metrics.gauge(metrics.CACHE_ZONE_UP, "up", ["cache", "zone"])
            g.add_metric(["c", "a"], 1)
            yield g

    registry().add_metrics_source(Source())
    assert scrape()[("resilience_cache_zone_up", (("cache", "c"), ("zone", "a")))] == 1


def test_default_collector_is_installed_in_prometheus_default_registry() -> None:
    protect("visible", isolation="semaphore")(lambda: 1)()
    text = generate_latest().decode()
    assert 'resilience_calls_total{dependency="visible",outcome="success"} 1.0' in text
