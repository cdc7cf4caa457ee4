"""Rate limit: the token bucket's decisions, its waiting drivers, accuracy and thread safety."""

from __future__ import annotations

import asyncio
import threading

import pytest

from resilience.circuit._ratelimit import RateLimit, TokenBucket
from resilience.errors import ConfigError, RateLimitedError, RejectedError


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": "10"}, "rate"),
        ({"rate": 10, "per": 0}, "per"),
        ({"rate": 10, "per": float("inf")}, "per"),
        ({"rate": 10, "burst": 0.5}, "burst"),
        ({"rate": 10, "wait": -0.1}, "wait"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimit(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_defaults_burst_is_one_period_and_at_least_one_token() -> None:
    assert RateLimit(100).capacity == 100
    assert RateLimit(100, per=1.0).per_second == 100
    assert RateLimit(30, per=60).per_second == 0.5
    assert RateLimit(0.5).capacity == 1.0
    assert RateLimit(100, burst=5).capacity == 5
    with pytest.raises(ConfigError) as info:
        TokenBucket("100/s")  # type: ignore[arg-type]
    assert info.value.field == "rate_limit"


def test_starts_full_then_refuses_with_the_time_until_a_token() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, burst=3), clock)
    assert [bucket.try_take(clock.now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take(clock.now) == pytest.approx(0.1)
    assert bucket.try_take(clock.now) == pytest.approx(0.1)  # a refusal takes nothing
    clock.now += 0.05
    assert bucket.try_take(clock.now) == pytest.approx(0.05)
    assert bucket.available(clock.now) == pytest.approx(0.5)
    clock.now += 0.05
    assert bucket.try_take(clock.now) == 0.0


def test_refill_is_capped_at_burst_and_time_never_runs_backwards() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, burst=2), clock)
    bucket.try_take(clock.now)
    bucket.try_take(clock.now)
    clock.now += 3600
    assert bucket.available(clock.now) == 2.0
    bucket.try_take(clock.now)
    bucket.try_take(clock.now)
    # A thread that read the clock a little earlier must not refill or corrupt the bucket.
    assert bucket.try_take(clock.now - 5.0) == pytest.approx(0.1)
    assert bucket.available(clock.now) == 0.0


def test_admits_the_rate_within_one_percent_over_ten_seconds() -> None:
    """1,000/s offered at 10,000/s for 10 s: past the initial burst, 10,000 admitted (+-1%)."""
    clock = Clock(0.0)
    bucket = TokenBucket(RateLimit(1000), clock)
    while bucket.try_take(0.0) == 0.0:  # drain the burst (one period's worth)
        pass
    admitted = 0
    for i in range(1, 100_001):
        if bucket.try_take(i * 0.0001) == 0.0:
            admitted += 1
    assert abs(admitted - 10_000) <= 100
    assert abs(admitted - 10_000) <= 1  # in fact exact up to float rounding


def test_reservations_are_served_in_booking_order_and_bounded_by_max_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, burst=1), clock)
    assert bucket.reserve(clock.now, 1.0) == 0.0
    assert bucket.reserve(clock.now, 1.0) == pytest.approx(0.1)
    assert bucket.reserve(clock.now, 1.0) == pytest.approx(0.2)
    assert bucket.reserve(clock.now, 0.25) is None  # due in 0.3 s: nothing booked
    assert bucket.reserve(clock.now, 0.3) == pytest.approx(0.3)
    assert bucket.available(clock.now) == 0.0
    # A caller that does not wait sees the queue of bookings ahead of it.
    assert bucket.try_take(clock.now) == pytest.approx(0.4)
    bucket.refund(clock.now)
    assert bucket.try_take(clock.now) == pytest.approx(0.3)


def test_take_sync_sleeps_for_its_booked_token() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, burst=1, wait=0.5), clock)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    assert bucket.take_sync(sleep=sleep) == 0.0
    assert bucket.take_sync(sleep=sleep) == 0.0
    assert slept == [pytest.approx(0.1)]
    # wait=0 refuses at once and says when a token is due
    assert bucket.take_sync(wait=0.0, sleep=sleep) == pytest.approx(0.1)
    # a token due later than the wait allowed: refused, nothing booked
    bucket.reserve(clock.now, 10.0)
    bucket.reserve(clock.now, 10.0)
    assert bucket.take_sync(wait=0.05, sleep=sleep) == pytest.approx(0.3)
    assert slept == [pytest.approx(0.1)]


def test_take_sync_interrupted_gives_its_token_back() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, burst=1, wait=1.0), clock)
    bucket.try_take(clock.now)

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bucket.take_sync(sleep=sleep)
    # the booking was returned: the next caller waits 0.1 s, not 0.2 s
    assert bucket.try_take(clock.now) == pytest.approx(0.1)


async def test_take_async_waits_and_a_cancelled_waiter_refunds() -> None:
    clock = Clock()
    bucket = TokenBucket(RateLimit(10, burst=1, wait=1.0), clock)
    gates: list[asyncio.Future[None]] = []

    def sleep(seconds: float) -> asyncio.Future[None]:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        gates.append(gate)
        return gate

    assert await bucket.take_async(sleep=sleep) == 0.0
    first = asyncio.create_task(bucket.take_async(sleep=sleep))
    second = asyncio.create_task(bucket.take_async(sleep=sleep))
    await asyncio.sleep(0)
    assert len(gates) == 2
    assert bucket.try_take(clock.now) == pytest.approx(0.3)  # two bookings ahead
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert bucket.try_take(clock.now) == pytest.approx(0.2)  # one booking ahead
    gates[0].set_result(None)
    assert await first == 0.0
    assert await bucket.take_async(wait=0.0) == pytest.approx(0.2)


def test_threads_never_take_more_than_the_bucket_holds() -> None:
    bucket = TokenBucket(RateLimit(1, per=3600, burst=5000), Clock())
    taken = [0] * 8
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(2000):
            if bucket.try_take(100.0) == 0.0:
                taken[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 5000


def test_rate_limited_error_is_a_rejection_carrying_retry_after() -> None:
    err = RateLimitedError("ratings", 0.25, 100, 1.0)
    assert isinstance(err, RejectedError)
    assert (err.dependency, err.retry_after, err.rate, err.per) == ("ratings", 0.25, 100, 1.0)
    assert "retry after 0.250s" in str(err)
