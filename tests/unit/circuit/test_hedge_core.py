"""Hedging: the config, the delay rule and budget, and the asyncio and thread drivers.

The drivers run on controllable futures: the test decides when an attempt ends and when the
delay elapses (a fake ``sleep`` for asyncio, a scripted ``wait`` for threads), so nothing
sleeps to move time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Callable
from typing import Any

import pytest

from resilience.circuit._hedge import (
    BUDGET_TTL,
    MIN_DELAY,
    Hedge,
    HedgeThrottle,
    run_hedged,
    run_hedged_sync,
)
from resilience.errors import ConfigError

# -- config and throttle ---------------------------------------------------------------------


def test_defaults() -> None:
    hedge = Hedge()
    assert (hedge.delay, hedge.max_attempts, hedge.budget) == (None, 2, 0.1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delay": -0.1}, "delay"),
        ({"delay": "1ms"}, "delay"),
        ({"max_attempts": 1}, "max_attempts"),
        ({"max_attempts": 11}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"budget": 1.5}, "budget"),
        ({"budget": -0.1}, "budget"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Hedge(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        HedgeThrottle(0.1)  # type: ignore[arg-type]
    assert info.value.field == "hedge"


def test_delay_follows_p95_with_a_floor_or_is_fixed() -> None:
    adaptive = HedgeThrottle(Hedge())
    assert adaptive.delay(None) == math.inf  # nothing observed yet: hedge on failure only
    assert adaptive.delay(0.050) == 0.050
    assert adaptive.delay(0.0001) == MIN_DELAY
    fixed = HedgeThrottle(Hedge(delay=0.02))
    assert fixed.delay(None) == fixed.delay(0.5) == 0.02


def test_budget_caps_hedges_to_a_fraction_of_calls_over_its_ttl() -> None:
    throttle = HedgeThrottle(Hedge())
    assert not throttle.try_hedge(0.0)  # no calls yet, no hedge
    for _ in range(9):
        throttle.on_call(0.0)
    assert not throttle.try_hedge(0.0)
    throttle.on_call(0.0)
    assert throttle.try_hedge(0.0)
    assert not throttle.try_hedge(0.0)
    for _ in range(100):
        throttle.on_call(1.0)
    assert throttle.available(1.0) == 10
    assert throttle.available(1.0 + BUDGET_TTL + 1) == 0  # earned credit expires
    none = HedgeThrottle(Hedge(budget=0))
    for _ in range(1000):
        none.on_call(0.0)
    assert not none.try_hedge(0.0)


# -- asyncio driver --------------------------------------------------------------------------


class Attempts:
    """Attempts whose outcome the test sets; records cancellations and clean exits."""

    def __init__(self) -> None:
        self.futures: dict[int, asyncio.Future[str]] = {}
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    async def __call__(self, n: int) -> str:
        future = self.futures[n] = asyncio.get_running_loop().create_future()
        try:
            return await future
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        finally:
            self.finished.append(n)


class Timers:
    """A fake ``sleep``: each delay is a future the test resolves."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[None]] = []
        self.delays: list[float] = []

    def __call__(self, delay: float) -> asyncio.Future[None]:
        self.delays.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def fire(self) -> None:
        self.pending[-1].set_result(None)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def hedged(
    attempts: Attempts,
    timers: Timers,
    events: list[str],
    *,
    delay: float = 0.05,
    max_attempts: int = 2,
    allow: Callable[[], bool] = lambda: True,
) -> asyncio.Task[str]:
    return asyncio.create_task(
        run_hedged(
            attempts,
            delay=delay,
            max_attempts=max_attempts,
            allow=allow,
            on_event=events.append,
            sleep=timers,
        )
    )


async def test_a_fast_first_attempt_is_not_hedged() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events)
    await settle()
    attempts.futures[1].set_result("one")
    assert await call == "one"
    assert list(attempts.futures) == [1] and events == []
    assert timers.delays == [0.05] and timers.pending[0].cancelled()


async def test_a_slow_first_attempt_is_hedged_and_the_loser_cancelled_and_awaited() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events)
    await settle()
    timers.fire()
    await settle()
    assert list(attempts.futures) == [1, 2] and events == ["sent"]
    attempts.futures[2].set_result("two")
    assert await call == "two"
    assert events == ["sent", "won"]
    assert attempts.cancelled == [1]
    assert sorted(attempts.finished) == [1, 2]  # the loser ran its cleanup before we returned


async def test_a_failure_starts_the_next_attempt_at_once() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events)
    await settle()
    attempts.futures[1].set_exception(ConnectionError("one"))
    await settle()
    assert list(attempts.futures) == [1, 2] and events == ["sent"]
    attempts.futures[2].set_result("two")
    assert await call == "two"
    assert events == ["sent", "won"]


async def test_all_failing_raises_the_first_attempts_error() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events, max_attempts=3)
    await settle()
    timers.fire()
    await settle()
    first = ConnectionError("first")
    attempts.futures[2].set_exception(TimeoutError("second"))
    await settle()
    attempts.futures[1].set_exception(first)
    await settle()
    attempts.futures[3].set_exception(ValueError("third"))
    with pytest.raises(ConnectionError) as info:
        await call
    assert info.value is first
    assert events == ["sent", "sent"]


async def test_no_budget_no_hedge_and_the_first_attempt_is_awaited() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    asked: list[bool] = []

    def allow() -> bool:
        asked.append(False)
        return False

    call = hedged(attempts, timers, events, allow=allow)
    await settle()
    timers.fire()
    await settle()
    assert list(attempts.futures) == [1] and events == ["budget_exhausted"]
    assert len(timers.delays) == 1  # no new timer once the budget said no
    attempts.futures[1].set_exception(ConnectionError("one"))
    with pytest.raises(ConnectionError):
        await call
    assert asked == [False]  # asked once per call, not again on the failure


async def test_infinite_delay_hedges_on_failure_only_and_zero_starts_all() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events, delay=math.inf)
    await settle()
    assert timers.delays == []
    attempts.futures[1].set_result("one")
    assert await call == "one"

    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events, delay=0, max_attempts=3)
    await settle()
    assert list(attempts.futures) == [1, 2, 3] and events == ["sent", "sent"]
    attempts.futures[3].set_result("three")
    assert await call == "three"
    assert sorted(attempts.cancelled) == [1, 2]


async def test_the_delay_counts_from_the_newest_attempt() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events, max_attempts=3)
    await settle()
    attempts.futures[1].set_exception(ConnectionError("one"))  # attempt 2 at once...
    await settle()
    assert timers.pending[0].cancelled()  # ...and the delay starts again from it
    assert len(timers.pending) == 2
    timers.fire()
    await settle()
    assert list(attempts.futures) == [1, 2, 3]
    attempts.futures[2].set_result("two")
    assert await call == "two"


async def test_cancelling_the_caller_cancels_and_awaits_every_attempt() -> None:
    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events)
    await settle()
    timers.fire()
    await settle()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert sorted(attempts.cancelled) == [1, 2]
    assert sorted(attempts.finished) == [1, 2]


async def test_a_base_exception_from_an_attempt_ends_the_race() -> None:
    class Stop(BaseException):
        pass

    attempts, timers, events = Attempts(), Timers(), []
    call = hedged(attempts, timers, events)
    await settle()
    timers.fire()
    await settle()
    attempts.futures[1].set_exception(Stop())
    with pytest.raises(Stop):
        await call
    assert attempts.cancelled == [2]


# -- thread driver ---------------------------------------------------------------------------


class Script:
    """A scripted ``concurrent.futures.wait``: step i runs on the i-th wait."""

    def __init__(self, *steps: Callable[[], None]) -> None:
        self.steps = list(steps)
        self.timeouts: list[float | None] = []

    def __call__(
        self,
        fs: set[concurrent.futures.Future[Any]],
        timeout: float | None = None,
        return_when: str = "",
    ) -> tuple[set[Any], set[Any]]:
        self.timeouts.append(timeout)
        self.steps.pop(0)()
        done = {f for f in fs if f.done()}
        return done, fs - done


class Submitted:
    def __init__(self) -> None:
        self.futures: dict[int, concurrent.futures.Future[str]] = {}

    def __call__(self, n: int) -> concurrent.futures.Future[str]:
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        if n == 1:
            future.set_running_or_notify_cancel()  # attempt 1 already runs
        self.futures[n] = future
        return future


def nothing() -> None:
    pass


def test_threads_hedge_after_the_delay_and_abandon_the_loser() -> None:
    sub, events, abandoned = Submitted(), [], []
    script = Script(nothing, lambda: sub.futures[2].set_result("two"))
    result = run_hedged_sync(
        sub,
        delay=0.05,
        max_attempts=2,
        on_event=events.append,
        abandon=lambda n, f: abandoned.append((n, f.cancelled())),
        clock=lambda: 10.0,
        wait=script,
    )
    assert result == "two"
    assert script.timeouts == [pytest.approx(0.05), None]  # after the last attempt, no timer
    assert events == ["sent", "won"]
    assert abandoned == [(1, False)]  # running: cannot be cancelled, left to finish


def test_threads_a_queued_loser_is_cancelled() -> None:
    sub, abandoned = Submitted(), []

    def both_start() -> None:
        pass

    script = Script(both_start, lambda: sub.futures[1].set_result("one"))
    result = run_hedged_sync(
        sub,
        delay=0.05,
        max_attempts=2,
        abandon=lambda n, f: abandoned.append((n, f.cancelled())),
        clock=lambda: 0.0,
        wait=script,
    )
    assert result == "one"
    assert abandoned == [(2, True)]  # still queued: it will never run


def test_threads_failures_and_the_first_error() -> None:
    sub, events = Submitted(), []
    first = ConnectionError("first")
    script = Script(
        lambda: sub.futures[1].set_exception(first),
        lambda: sub.futures[2].set_exception(ValueError("second")),
    )
    with pytest.raises(ConnectionError) as info:
        run_hedged_sync(sub, delay=math.inf, max_attempts=2, on_event=events.append, wait=script)
    assert info.value is first
    assert script.timeouts == [None, None]
    assert events == ["sent"]


def test_threads_budget_exhausted() -> None:
    sub, events = Submitted(), []
    script = Script(nothing, lambda: sub.futures[1].set_result("one"))
    result = run_hedged_sync(
        sub,
        delay=0.05,
        max_attempts=3,
        allow=lambda: False,
        on_event=events.append,
        clock=lambda: 0.0,
        wait=script,
    )
    assert result == "one"
    assert events == ["budget_exhausted"] and list(sub.futures) == [1]
    assert script.timeouts == [0.05, None]


def test_threads_with_a_real_pool() -> None:
    release = threading.Event()
    abandoned: list[int] = []

    def attempt(n: int) -> str:
        if n == 1:
            release.wait(10)
            return "one"
        return "two"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        result = run_hedged_sync(
            lambda n: pool.submit(attempt, n),
            delay=0,
            max_attempts=2,
            abandon=lambda n, f: abandoned.append(n),
        )
        assert result == "two"
        assert abandoned == [1]
        release.set()
