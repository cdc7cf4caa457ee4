"""The pipeline's slots for load control: a rate-limit bucket, a concurrency limit and a retry
budget, each reached through its small protocol (``_throttle``, ``_bulkhead``, ``_retry``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tenacity

from resilience import BulkheadFullError, RejectedError, Retry, State, protect, registry
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES


def counts(name: str) -> dict[str, int]:
    return dict(zip(OUTCOMES, registry().dependency(name).window.totals().counts, strict=True))


class Bucket:
    """Answers ``try_take`` from a script: 0.0 admits, a positive number is a delay."""

    def __init__(self, answers: list[float], wait: float = 0.0) -> None:
        self.answers = answers
        self.wait = wait
        self.asked: list[float] = []

    def try_take(self, now: float) -> float:
        self.asked.append(now)
        return self.answers.pop(0) if self.answers else 0.0


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


class Budget:
    def __init__(self, retries: int) -> None:
        self.retries = retries
        self.deposits = 0

    def deposit(self, now: float) -> None:
        self.deposits += 1

    def try_withdraw(self, now: float) -> bool:
        if self.retries <= 0:
            return False
        self.retries -= 1
        return True


# -- rate limit ---------------------------------------------------------------------------------


def test_no_token_refuses_the_call_and_serves_the_fallback() -> None:
    ran = []
    fn = protect("svc", isolation="semaphore", fallback="limited")(lambda: ran.append(1) or "ok")
    registry().dependency("svc").rate_limiter = Bucket([0.0, 0.5])
    assert fn() == "ok"
    assert fn() == "limited"
    assert len(ran) == 1
    c = counts("svc")
    assert c["rate_limited"] == 1 and c["fallback_success"] == 1


def test_without_fallback_the_caller_gets_a_rejected_error() -> None:
    dep = registry().dependency("svc", isolation="semaphore")
    dep.rate_limiter = Bucket([0.25])
    with pytest.raises(RejectedError) as info:
        dep.call(lambda: "never")
    assert info.value.dependency == "svc" and "rate limited" in str(info.value)


def test_a_call_waits_for_a_token_within_its_wait() -> None:
    with rtesting.fake_clock() as clock:
        dep = registry().dependency("svc", isolation="semaphore")
        bucket = Bucket([0.2, 0.2, 0.0], wait=0.5)
        dep.rate_limiter = bucket
        t0 = clock()
        assert dep.call(lambda: "ok") == "ok"
        assert bucket.asked == pytest.approx([t0, t0 + 0.2, t0 + 0.4])  # slept on the fake clock
        bucket.answers = [0.3, 0.3]
        with pytest.raises(RejectedError):
            dep.call(lambda: "ok")  # 0.3 + 0.3 > 0.5


async def test_async_calls_take_tokens_too() -> None:
    dep = registry().dependency("svc")
    dep.rate_limiter = Bucket([0.0, 0.4])

    async def ok() -> str:
        return "ok"

    guarded = protect("svc", fallback="limited")(ok)
    assert await guarded() == "ok"
    assert await guarded() == "limited"
    assert counts("svc")["rate_limited"] == 1


def test_a_refused_half_open_trial_gives_its_slot_back() -> None:
    dep = registry().dependency("svc", isolation="semaphore", min_calls=1, open_duration=1.0)
    with rtesting.fake_clock() as clock:
        with pytest.raises(ConnectionError):
            dep.call(lambda: (_ for _ in ()).throw(ConnectionError()))
        clock.advance(1.0)
        dep.rate_limiter = Bucket([1.0])
        with pytest.raises(RejectedError):
            dep.call(lambda: "ok")
        assert dep.state is State.HALF_OPEN and dep.breaker.trials_in_flight == 0
        assert dep.call(lambda: "ok") == "ok"
    assert dep.state is State.CLOSED


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
    dep = registry().dependency("svc", isolation="semaphore", min_calls=100)
    budget = Budget(retries=1)
    dep._retry_budget = budget
    attempts = []

    @protect("svc", fallback="fb", retry=Retry(attempts=5, wait=tenacity.wait_none(), on=OSError))
    def down() -> str:
        attempts.append(1)
        raise ConnectionError()

    assert down() == "fb"
    assert len(attempts) == 2  # the first, and the one retry the budget had
    assert down() == "fb"
    assert len(attempts) == 3  # no retry left
    assert budget.deposits == 2
    c = counts("svc")
    assert c["retried"] == 1 and c["retry_budget_exhausted"] == 2


async def test_the_budget_is_shared_by_async_callers() -> None:
    dep = registry().dependency("svc", min_calls=100)
    budget = Budget(retries=0)
    dep._retry_budget = budget

    @protect("svc", fallback="fb", retry=Retry(wait=tenacity.wait_none()))
    async def down() -> str:
        raise ConnectionError()

    assert await asyncio.gather(down(), down()) == ["fb", "fb"]
    assert budget.deposits == 2 and counts("svc")["retry_budget_exhausted"] == 2


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
