"""The pipeline's slots for load control: a rate-limit bucket, a concurrency limit and a retry
budget, each reached through its small protocol (``_throttle``, ``_bulkhead``, ``_retry``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import tenacity
from prometheus_client.parser import text_string_to_metric_families

from resilience import (
    BulkheadFullError,
    RateLimit,
    RateLimitedError,
    RejectedError,
    Retry,
    RetryBudget,
    State,
    protect,
    registry,
)
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES
from resilience.metrics import ResilienceCollector


def counts(name: str) -> dict[str, int]:
    return dict(zip(OUTCOMES, registry().dependency(name).window.totals().counts, strict=True))


def samples() -> list[Any]:
    from prometheus_client import CollectorRegistry, generate_latest

    prom = CollectorRegistry()
    prom.register(ResilienceCollector(registry()))
    text = generate_latest(prom).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def metric(name: str, dependency: str, outcome: str | None = None) -> float:
    for sample in samples():
        labels = sample.labels
        if (
            sample.name == name
            and labels.get("dependency") == dependency
            and (outcome is None or labels.get("outcome") == outcome)
        ):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {dependency} {outcome}")


def gauge(name: str, dependency: str) -> float:
    return metric(name, dependency)


class Limit:
    """A concurrency limit that records what the step asks of it."""

    def __init__(self, admit: bool = True, wait: float = 0.0) -> None:
        self.limit = 3
        self.wait = wait
        self.admit = admit
        self.in_use = 0
        self.log: list[Any] = []

    def try_acquire(self) -> bool:
        self.log.append("try")
        self.in_use += self.admit
        return self.admit

    def acquire(self, max_wait: float) -> bool:
        self.log.append(("wait", max_wait))
        self.in_use += self.admit
        return self.admit

    async def acquire_async(self, max_wait: float) -> bool:
        self.log.append(("await", max_wait))
        self.in_use += self.admit
        return self.admit

    def release(self, latency: float, dropped: bool) -> None:
        self.in_use -= 1
        self.log.append(("release", dropped))


# -- rate limit ---------------------------------------------------------------------------------


def ok() -> str:
    return "ok"


def boom() -> str:
    raise ConnectionError("down")


def test_no_token_refuses_the_call_and_serves_the_fallback() -> None:
    ran = []
    with rtesting.fake_clock():
        fn = protect(
            "svc", isolation="semaphore", fallback="limited", rate_limit=RateLimit(1, per=10.0)
        )(lambda: ran.append(1) or "ok")
        assert fn() == "ok"
        assert fn() == "limited"
    assert len(ran) == 1
    c = counts("svc")
    assert c["rate_limited"] == 1 and c["fallback_success"] == 1 and c["success"] == 1


def test_without_fallback_the_caller_gets_a_rate_limited_error() -> None:
    with rtesting.fake_clock() as clock:
        dep = registry().dependency("svc", isolation="semaphore", rate_limit=RateLimit(2))
        assert dep.call(ok) == dep.call(ok) == "ok"  # the burst: one period's worth
        with pytest.raises(RateLimitedError) as info:
            dep.call(ok)
        err = info.value
        assert isinstance(err, RejectedError) and err.dependency == "svc"
        assert (err.retry_after, err.rate, err.per) == (pytest.approx(0.5), 2, 1.0)
        clock.advance(0.5)
        assert dep.call(ok) == "ok"


def test_a_call_waits_for_a_token_within_its_wait_and_deadline() -> None:
    with rtesting.fake_clock() as clock:
        limit = RateLimit(5, burst=1, wait=0.5)
        dep = registry().dependency("svc", isolation="semaphore", rate_limit=limit)
        t0 = clock()
        assert dep.call(ok) == "ok"  # the burst
        assert dep.call(ok) == "ok"  # waited for the next token: 0.2 s on the fake clock
        assert clock() == pytest.approx(t0 + 0.2)
        with pytest.raises(RateLimitedError):  # the token is due after the call's deadline
            dep.guard(deadline=0.1).call(ok, None, (), {})
        assert clock() == pytest.approx(t0 + 0.2)  # refused at once, nothing booked
        assert dep.call(ok) == "ok"
        assert clock() == pytest.approx(t0 + 0.4)


def test_waiting_callers_are_served_in_arrival_order_from_threads() -> None:
    # Real time: three threads want the one token a 20/s bucket gives every 50 ms.
    dep = registry().dependency(
        "svc", isolation="semaphore", rate_limit=RateLimit(20, burst=1, wait=1.0)
    )
    dep.call(ok)
    order: list[int] = []
    lock = threading.Lock()

    def caller(i: int) -> None:
        dep.call(lambda: order.append(i))

    threads = []
    for i in range(3):
        t = threading.Thread(target=caller, args=(i,))
        with lock:
            t.start()
        threads.append(t)
        time.sleep(0.01)  # each books its token before the next arrives
    for t in threads:
        t.join()
    assert order == [0, 1, 2]
    assert counts("svc")["rate_limited"] == 0


async def test_async_calls_take_tokens_and_wait_on_the_loop() -> None:
    with rtesting.fake_clock() as clock:

        @protect("svc", fallback="limited", rate_limit=RateLimit(1, per=10.0))
        async def fetch() -> str:
            return "ok"

        assert await fetch() == "ok"
        assert await fetch() == "limited"
        assert counts("svc")["rate_limited"] == 1

        @protect("patient", rate_limit=RateLimit(1, per=1.0, wait=2.0))
        async def patient() -> str:
            return "ok"

        t0 = clock()
        assert await patient() == await patient() == "ok"
        assert clock() == pytest.approx(t0 + 1.0)


def test_a_refused_half_open_trial_gives_its_slot_back() -> None:
    with rtesting.fake_clock() as clock:
        dep = registry().dependency(
            "svc",
            isolation="semaphore",
            min_calls=1,
            open_duration=1.0,
            rate_limit=RateLimit(1, per=5.0),
        )
        with pytest.raises(ConnectionError):
            dep.call(boom)  # took the token
        clock.advance(1.0)  # half-open is due, the next token is not
        with pytest.raises(RateLimitedError):
            dep.call(ok)
        assert dep.state is State.HALF_OPEN and dep.breaker.trials_in_flight == 0
        clock.advance(4.0)
        assert dep.call(ok) == "ok"
    assert dep.state is State.CLOSED


def test_the_decorators_fast_path_takes_tokens_too() -> None:
    ran = []
    with rtesting.fake_clock() as clock:
        fn = protect(
            "svc",
            isolation="semaphore",
            fallback="limited",
            max_concurrent=1,
            rate_limit=RateLimit(150),
        )(lambda: ran.append(1) or "ok")
        results = [fn() for _ in range(200)]  # past the first calls: the fast path serves
        dep = registry().dependency("svc")
        assert dep.rated is dep.rate_limiter is not None
        assert results.count("ok") == len(ran) == 150 and results.count("limited") == 50
        clock.advance(0.1)  # 15 tokens
        assert dep.permits.try_take()  # the one permit is busy
        assert fn() == "limited"  # refused by the bulkhead, after the rate limit took a token
        dep.permits.give()
        bucket = dep.rate_limiter
        assert bucket is not None and bucket.available(clock()) == pytest.approx(14.0)
    c = counts("svc")
    assert c["rate_limited"] == 50 and c["rejected"] == 1 and c["success"] == 150


async def test_the_coroutine_fast_path_takes_tokens_too() -> None:
    with rtesting.fake_clock():

        @protect("svc", fallback="limited", rate_limit=RateLimit(150))
        async def fetch() -> str:
            return "ok"

        results = [await fetch() for _ in range(200)]
        assert registry().dependency("svc").rated is not None
        assert results.count("ok") == 150 and results.count("limited") == 50


def test_the_available_tokens_are_exported() -> None:
    with rtesting.fake_clock() as clock:
        dep = registry().dependency("svc", isolation="semaphore", rate_limit=RateLimit(10))
        for _ in range(4):
            dep.call(ok)
        assert gauge("resilience_rate_limit_available_tokens", "svc") == pytest.approx(6.0)
        clock.advance(0.1)
        assert gauge("resilience_rate_limit_available_tokens", "svc") == pytest.approx(7.0)


# -- concurrency limit ------------------------------------------------------------------------


def test_a_limit_sees_every_call_with_its_verdict() -> None:
    dep = registry().dependency("svc", isolation="semaphore", min_calls=100)
    limit = Limit()
    dep.limiter = limit
    dep.call(lambda: "ok")
    with pytest.raises(ConnectionError):
        dep.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    assert limit.log == ["try", ("release", False), "try", ("release", True)]
    assert limit.in_use == 0
    dep.limiter = None  # back to the fixed permits
    assert dep.limiter is dep.permits


async def test_a_waiting_limit_is_awaited_and_a_refusal_is_a_bulkhead_error() -> None:
    dep = registry().dependency("svc", timeout=0.5)
    limit = Limit(wait=0.2)
    dep.limiter = limit

    async def ok() -> str:
        return "ok"

    assert await dep.acall(ok) == "ok"
    assert limit.log[0] == ("await", pytest.approx(0.2))
    limit.admit = False
    with pytest.raises(BulkheadFullError) as info:
        await dep.acall(ok)
    assert info.value.limit == 3
    assert counts("svc")["rejected"] == 1


def test_a_sync_caller_waits_on_the_limit_within_its_deadline() -> None:
    with rtesting.fake_clock():
        dep = registry().dependency("svc", isolation="semaphore")
        limit = Limit(wait=5.0)
        dep.limiter = limit
        assert dep.guard(deadline=0.3).call(lambda: "ok", None, (), {}) == "ok"
        assert limit.log[0] == ("wait", pytest.approx(0.3))


# -- retry budget -----------------------------------------------------------------------------


def test_an_exhausted_budget_stops_retries_and_is_counted() -> None:
    attempts = []
    one_retry = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0)  # a reserve of 1 retry

    with rtesting.fake_clock():

        @protect(
            "svc",
            isolation="semaphore",
            min_calls=100,
            fallback="fb",
            retry=Retry(attempts=5, wait=tenacity.wait_none(), on=OSError, budget=one_retry),
        )
        def down() -> str:
            attempts.append(1)
            raise ConnectionError()

        assert down() == "fb"
        assert len(attempts) == 2  # the first, and the one retry the budget had
        assert down() == "fb"
        assert len(attempts) == 3  # no retry left
    c = counts("svc")
    assert c["retried"] == 1 and c["retry_budget_exhausted"] == 2
    assert c["failure"] == 3 and c["fallback_success"] == 2  # attempts; calls below
    assert metric("resilience_calls_total", "svc", "failure") == 2
    assert metric("resilience_retries_total", "svc", "budget_exhausted") == 2
    assert metric("resilience_retries_total", "svc", "attempted") == 1


async def test_the_budget_is_shared_by_every_call_site_of_a_key() -> None:
    one_retry = RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10.0)
    retry = Retry(attempts=3, wait=tenacity.wait_none(), budget=one_retry)
    with rtesting.fake_clock():

        @protect("svc", min_calls=100, fallback="fb", retry=retry)
        async def first() -> str:
            raise ConnectionError()

        @protect("svc", fallback="fb", retry=retry)
        async def second() -> str:
            raise ConnectionError()

        assert await first() == "fb"  # one retry, then the budget is spent
        assert await second() == "fb"  # none left for the other call site
    c = counts("svc")
    assert c["retried"] == 1 and c["retry_budget_exhausted"] == 2
    dep = registry().dependency("svc")
    assert dep.retry_budget(retry) is dep.retry_budget(Retry(budget=one_retry))
    assert dep.retry_budget(Retry(budget=None)) is None


@pytest.mark.parametrize("budgeted", [True, False])
def test_the_default_budget_caps_what_an_outage_costs(budgeted: bool) -> None:
    # 1,000 calls a second to a dead dependency, 3 attempts each, for 2 s: with Finagle's
    # defaults, retries are 20% of the calls plus a reserve of 100; without, every attempt.
    assert Retry().budget == RetryBudget()  # on by default
    calls = []
    if budgeted:
        retry = Retry(attempts=3, wait=tenacity.wait_none())
    else:
        retry = Retry(attempts=3, wait=tenacity.wait_none(), budget=None)
    with rtesting.fake_clock() as clock:

        @protect("svc", isolation="semaphore", min_calls=10**6, fallback=None, retry=retry)
        def down() -> None:
            calls.append(1)
            raise ConnectionError()

        for _ in range(2000):
            down()
            clock.advance(0.001)
    exhausted = counts("svc")["retry_budget_exhausted"]
    if budgeted:
        assert 2000 + 495 <= len(calls) <= 2000 + 500  # 1.25 calls per caller call at most
        assert exhausted >= 1500
    else:
        assert len(calls) == 6000 and exhausted == 0


async def test_a_limit_learns_timeouts_as_drops_and_outside_cancellations_as_not() -> None:
    dep = registry().dependency("svc", timeout=0.05, min_calls=100)
    limit = Limit()
    dep.limiter = limit

    async def hangs() -> None:
        await asyncio.sleep(5)

    with pytest.raises(Exception, match="timed out"):
        await dep.acall(hangs)
    task = asyncio.ensure_future(dep.acall(hangs))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limit.log == ["try", ("release", True), "try", ("release", False)]
    assert limit.in_use == 0
