"""Hedged calls through protect: coroutines and thread-pool calls race attempts that each pass
the whole pipeline, and the caller's call is counted once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import CircuitOpenError, Hedge, protect, registry
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES
from resilience.metrics import ResilienceCollector

FAST_HEDGE = Hedge(delay=0.02, max_attempts=2, budget=1.0)


def counts(name: str) -> dict[str, int]:
    return dict(zip(OUTCOMES, registry().dependency(name).window.totals().counts, strict=True))


def metrics(name: str) -> dict[tuple[str, str], float]:
    prom = CollectorRegistry()
    prom.register(ResilienceCollector(registry()))
    out = {}
    for family in text_string_to_metric_families(generate_latest(prom).decode()):
        for s in family.samples:
            if s.labels.get("dependency") == name and "outcome" in s.labels:
                out[(s.name, s.labels["outcome"])] = s.value
    return out


HOLD = -1.0  # a delay that lasts until the test releases it: such an attempt cannot win early


class Script:
    """Attempt n sleeps ``delays[n-1]`` seconds (``HOLD``: until ``release()``), then returns
    ``n`` (or raises its error)."""

    def __init__(self, *delays: float, errors: dict[int, Exception] | None = None) -> None:
        self.delays = delays
        self.errors = errors or {}
        self.started = 0
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self._lock = threading.Lock()
        self._held = threading.Event()

    def release(self) -> None:
        self._held.set()

    def _next(self) -> int:
        with self._lock:
            self.started += 1
            return self.started

    async def coro(self) -> int:
        n = self._next()
        try:
            delay = self.delays[n - 1]
            if delay == HOLD:
                while not self._held.is_set():
                    await asyncio.sleep(0.005)
            await asyncio.sleep(max(0.0, delay))
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        self.finished.append(n)
        if n in self.errors:
            raise self.errors[n]
        return n

    def sync(self) -> int:
        n = self._next()
        delay = self.delays[n - 1]
        if delay == HOLD:
            self._held.wait(10)
        time.sleep(max(0.0, delay))
        self.finished.append(n)
        if n in self.errors:
            raise self.errors[n]
        return n


# -- coroutines ---------------------------------------------------------------------------------


async def test_a_slow_first_attempt_is_raced_and_the_loser_cancelled() -> None:
    script = Script(HOLD, 0.0)
    fn = protect("svc", hedge=FAST_HEDGE, timeout=10.0)(script.coro)
    assert await fn() == 2
    assert script.cancelled == [1]  # cancelled and awaited before the call returned
    c = counts("svc")
    assert c["success"] == 1 and c["failure"] == c["timeout"] == 0  # the loser recorded nothing
    m = metrics("svc")
    assert m[("resilience_hedges_total", "sent")] == 1
    assert m[("resilience_hedges_total", "won")] == 1
    assert m[("resilience_calls_total", "success")] == 1


async def test_a_failed_attempt_starts_the_next_at_once_and_the_call_counts_once() -> None:
    script = Script(0.0, 0.0, errors={1: ConnectionError("first")})
    hedge = Hedge(delay=None, max_attempts=3, budget=1.0)  # nothing observed yet: on failure only
    fn = protect("svc", hedge=hedge, min_calls=100)(script.coro)
    assert await fn() == 2
    c = counts("svc")
    assert c["failure"] == 1 and c["success"] == 1  # the breaker judged both attempts
    m = metrics("svc")
    assert m[("resilience_calls_total", "success")] == 1  # the caller's call: once
    assert m[("resilience_calls_total", "failure")] == 0
    assert m[("resilience_hedges_total", "sent")] == 1


async def test_when_every_attempt_fails_the_first_error_is_returned() -> None:
    first, second = ConnectionError("first"), ConnectionError("second")
    script = Script(0.0, 0.0, errors={1: first, 2: second})
    fn = protect("svc", hedge=FAST_HEDGE, min_calls=100)(script.coro)
    with pytest.raises(ConnectionError) as info:
        await fn()
    assert info.value is first
    with_fallback = protect("svc", hedge=FAST_HEDGE, fallback="fb")(
        Script(0.0, 0.0, errors={1: first, 2: second}).coro
    )
    assert await with_fallback() == "fb"
    m = metrics("svc")
    assert m[("resilience_calls_total", "failure")] == 2  # two caller calls, four attempts
    assert counts("svc")["failure"] == 4


async def test_an_exhausted_hedge_budget_waits_for_the_first_attempt() -> None:
    script = Script(0.1, 0.0)
    fn = protect("svc", hedge=Hedge(delay=0.01, budget=0.0))(script.coro)
    assert await fn() == 1
    assert script.started == 1
    m = metrics("svc")
    assert m[("resilience_hedges_total", "budget_exhausted")] == 1
    assert m[("resilience_hedges_total", "sent")] == 0


async def test_the_budget_allows_its_fraction_of_calls() -> None:
    hedge = Hedge(delay=0.0, max_attempts=2, budget=0.25)  # every call wants a hedge at once

    @protect("svc", hedge=hedge)
    async def fn() -> str:
        return "ok"

    for _ in range(40):
        assert await fn() == "ok"
    m = metrics("svc")
    assert m[("resilience_hedges_total", "sent")] == 10  # a quarter of the calls
    assert m[("resilience_hedges_total", "budget_exhausted")] == 30
    assert m[("resilience_calls_total", "success")] == 40


async def test_every_attempt_passes_the_breaker_and_the_limit() -> None:
    with rtesting.forced("open-dep", "open"):
        script = Script(0.0, 0.0)
        fn = protect("open-dep", hedge=FAST_HEDGE, fallback="fb")(script.coro)
        assert await fn() == "fb"
        assert script.started == 0  # refused: no hedge after a refusal of the first attempt
        assert metrics("open-dep")[("resilience_hedges_total", "sent")] == 0
    assert counts("open-dep")["short_circuited"] == 1

    # One permit: the hedge is refused by the bulkhead, the first attempt still wins.
    script = Script(0.1, 0.0)
    fn = protect("narrow", hedge=FAST_HEDGE, max_concurrent=1)(script.coro)
    assert await fn() == 1
    assert script.started == 1
    c, m = counts("narrow"), metrics("narrow")
    assert c["rejected"] == 1 and m[("resilience_calls_total", "rejected")] == 0
    assert m[("resilience_calls_total", "success")] == 1


async def test_a_forced_open_circuit_raises_for_a_hedged_call_without_fallback() -> None:
    fn = protect("svc", hedge=FAST_HEDGE)(Script(0.0).coro)
    with rtesting.forced("svc", "open"), pytest.raises(CircuitOpenError):
        await fn()


async def test_the_adaptive_delay_follows_the_observed_p95() -> None:
    with rtesting.fake_clock() as clock:
        dep = registry().dependency("svc", timeout=5.0)
        assert dep.observed_p95() is None  # nothing observed: hedge on failure only

        async def step(seconds: float) -> None:
            clock.advance(seconds)

        for _ in range(19):
            await dep.acall(step, 0.010)
        assert dep.observed_p95() is None  # too few calls to trust a p95
        for i in range(81):
            await dep.acall(step, 0.010 if i < 76 else 0.200)
        p95 = dep.observed_p95()
        assert p95 == pytest.approx(0.010, rel=0.03)
        for _ in range(10):
            dep.window.record_call(OUTCOMES.index("success"), 0.200, clock())
        assert dep.observed_p95() == p95  # kept for P95_EVERY
        clock.advance(0.1)
        assert dep.observed_p95() == pytest.approx(0.200, rel=0.03)
        fast = registry().dependency("fast")
        for _ in range(20):
            await fast.acall(step, 0.00001)
        throttle = fast.hedge_throttle(Hedge())
        assert throttle.delay(fast.observed_p95()) == 0.001  # the floor


async def test_a_slow_outlier_is_hedged_after_the_p95_in_real_time() -> None:
    script = Script(*([0.005] * 40), HOLD, 0.005)
    fn = protect("svc", hedge=Hedge(budget=1.0), timeout=10.0)(script.coro)
    for _ in range(40):
        await fn()
    time.sleep(0.1)  # the p95 is re-read at most every 0.1 s
    assert await fn() == 42  # attempt 41 was the slow one; 42 raced it after the p95
    assert script.cancelled == [41]


# -- threads ------------------------------------------------------------------------------------


def test_a_thread_pool_call_is_raced_and_the_loser_abandoned() -> None:
    script = Script(HOLD, 0.0)
    fn = protect("svc", hedge=FAST_HEDGE, timeout=10.0, pool_size=4)(script.sync)
    assert fn() == 2
    pool = registry().dependency("svc").pool
    assert pool is not None and pool.abandoned == 1  # still running, accounted as abandoned
    m = metrics("svc")
    assert m[("resilience_hedges_total", "won")] == 1
    assert m[("resilience_calls_total", "success")] == 1
    script.release()
    deadline = time.monotonic() + 5
    while pool.abandoned and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.abandoned == 0 and pool.permits.in_use == 0
    assert counts("svc")["success"] == 1  # the loser's late success was never recorded


def test_an_attempt_past_its_timeout_is_a_failure_that_starts_the_next() -> None:
    script = Script(HOLD, 0.0)
    hedge = Hedge(delay=None, budget=1.0)  # nothing observed: hedge only on failure
    fn = protect("svc", hedge=hedge, timeout=0.3, min_calls=100)(script.sync)
    start = time.monotonic()
    assert fn() == 2
    script.release()
    assert time.monotonic() - start >= 0.29  # the second attempt waited for the first's timeout
    c, m = counts("svc"), metrics("svc")
    assert c["timeout"] == 1 and c["success"] == 1
    assert m[("resilience_calls_total", "timeout")] == 0
    assert m[("resilience_calls_total", "success")] == 1


def test_sync_attempts_all_failing_return_the_first_error_or_the_fallback() -> None:
    first = ConnectionError("first")
    script = Script(0.0, 0.0, errors={1: first, 2: ConnectionError("second")})
    fn = protect("svc", hedge=FAST_HEDGE, min_calls=100)(script.sync)
    with pytest.raises(ConnectionError) as info:
        fn()
    assert info.value is first
    fb = protect("svc", hedge=FAST_HEDGE, fallback=lambda: "fb")(
        Script(0.0, 0.0, errors={1: first, 2: first}).sync
    )
    assert fb() == "fb"
    assert metrics("svc")[("resilience_calls_total", "failure")] == 2


def test_acall_of_a_sync_function_is_hedged_in_the_pool() -> None:
    script = Script(HOLD, 0.0)

    async def main() -> Any:
        guard = registry().dependency("svc", timeout=10.0).guard(hedge=FAST_HEDGE)
        return await guard.acall_sync(script.sync, (), {})

    assert asyncio.run(main()) == 2
    script.release()
    assert metrics("svc")[("resilience_hedges_total", "won")] == 1
