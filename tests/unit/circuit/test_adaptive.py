"""Adaptive concurrency limit: config, each algorithm's arithmetic, and the waiting limiter."""

from __future__ import annotations

import asyncio
import heapq
import random
import threading

import pytest

from resilience.circuit._adaptive import AdaptiveLimit, AdaptiveLimiter
from resilience.circuit._limit_algorithms import Aimd, Gradient2, Vegas
from resilience.errors import BulkheadFullError, ConfigError, LimitExceededError, RejectedError

# -- config ------------------------------------------------------------------------------


def test_defaults_are_netflix_concurrency_limits() -> None:
    assert AdaptiveLimit().algorithm == "vegas"
    assert AdaptiveLimit().bounds == (1, 20, 1000)
    assert AdaptiveLimit("gradient2").bounds == (20, 20, 200)
    assert AdaptiveLimit("aimd").bounds == (20, 20, 200)
    vegas = AdaptiveLimit()
    assert (vegas.parameter("smoothing"), vegas.parameter("probe_multiplier")) == (1.0, 30)
    g2 = AdaptiveLimit("gradient2")
    assert [
        g2.parameter(n) for n in ("smoothing", "queue_size", "long_window", "rtt_tolerance")
    ] == [
        0.2,
        4,
        600,
        1.5,
    ]
    aimd = AdaptiveLimit("aimd")
    assert (aimd.parameter("backoff_ratio"), aimd.parameter("timeout")) == (0.9, 5.0)
    assert AdaptiveLimit().wait == 0.0


def test_common_keywords_override_and_pull_the_defaults_in() -> None:
    assert AdaptiveLimit("vegas", min=5, max=50, initial=10).bounds == (5, 10, 50)
    assert AdaptiveLimit("gradient2", max=10).bounds == (10, 10, 10)
    assert AdaptiveLimit("aimd", min=1).bounds == (1, 20, 200)
    assert AdaptiveLimit("vegas", min=30).bounds == (30, 30, 1000)
    assert AdaptiveLimit("vegas", smoothing=0.5) == AdaptiveLimit("vegas", smoothing=0.5)
    assert hash(AdaptiveLimit("aimd", timeout=1.0)) == hash(AdaptiveLimit("aimd", timeout=1.0))


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("cubic",), {}, "algorithm"),
        (("vegas",), {"queue_size": 4}, "queue_size"),
        (("aimd",), {"smoothing": 0.5}, "smoothing"),
        (("vegas",), {"smoothing": 0}, "smoothing"),
        (("vegas",), {"probe": "sometimes"}, "probe"),
        (("vegas",), {"window": 0}, "window"),
        (("gradient2",), {"rtt_tolerance": 0.9}, "rtt_tolerance"),
        (("gradient2",), {"long_window": 1.5}, "long_window"),
        (("aimd",), {"backoff_ratio": 1.0}, "backoff_ratio"),
        (("aimd",), {"timeout": 0}, "timeout"),
        (("vegas",), {"min": 0}, "min"),
        (("vegas",), {"max": True}, "max"),
        (("vegas",), {"min": 10, "max": 5}, "min"),
        (("vegas",), {"initial": 50, "max": 10}, "initial"),
        (("vegas",), {"wait": -1}, "wait"),
    ],
)
def test_bad_config_names_the_field(
    args: tuple[str, ...], kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AdaptiveLimit(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        AdaptiveLimiter("vegas")  # type: ignore[arg-type]
    assert info.value.field == "limit"


# -- Vegas ------------------------------------------------------------------------------------


def reference_vegas(initial: float = 20, probe_multiplier: int = 1000) -> Vegas:
    return Vegas(
        initial,
        1,
        1000,
        smoothing=1.0,
        probe_multiplier=probe_multiplier,
        probe="reset",
        window=1,
        rng=random.Random(0),
    )


def test_vegas_reference_arithmetic() -> None:
    v = reference_vegas()
    v.update(0.010, 20, False)  # first sample: the no-load RTT
    assert (v.limit, v.rtt_noload) == (20, 0.010)
    v.update(0.010, 9, False)  # app-limited: under half the limit in flight
    assert v.limit == 20
    v.update(0.010, 20, False)  # no queue: + 6 log10
    assert v.limit == 26
    v.update(0.0104, 26, False)  # queue ceil(26 * 0.038) = 1 <= threshold 1: + beta
    assert v.limit == 32
    v.update(0.0112, 32, False)  # queue ceil(32 * 0.107) = 4: between alpha 3 and beta 6
    assert v.limit == 32
    v.update(0.0106, 32, False)  # queue ceil(32 * 0.057) = 2 < alpha: + log10
    assert v.limit == 33
    v.update(0.020, 33, False)  # queue 17 > beta: - log10
    assert v.limit == 32
    v.update(0.010, 32, True)  # a drop: - log10
    assert v.limit == 31
    v.update(0.008, 31, False)  # a faster call lowers the baseline, nothing else
    assert (v.limit, v.rtt_noload) == (31, 0.008)


def test_vegas_reference_probe_takes_the_probing_calls_rtt() -> None:
    v = reference_vegas(initial=2, probe_multiplier=1)
    v.update(0.010, 2, False)
    samples = 0
    while v.rtt_noload == 0.010:
        v.update(0.050, 2, False)  # loaded calls; the probe makes one of them the baseline
        samples += 1
    assert v.rtt_noload == 0.050
    assert samples <= 2 * 2


def test_vegas_window_averages_samples_before_deciding() -> None:
    v = Vegas(
        20,
        1,
        1000,
        smoothing=1.0,
        probe_multiplier=1000,
        probe="drain",
        window=4,
        rng=random.Random(0),
    )
    for rtt in (0.009, 0.011, 0.010, 0.010):
        v.update(rtt, 20, False)
    assert v.rtt_noload == pytest.approx(0.010)  # the mean, not the luckiest sample
    for _ in range(3):
        v.update(0.010, 20, False)
    assert v.limit == 20  # three samples: no decision yet
    v.update(0.010, 20, True)  # a drop anywhere in the window counts
    assert v.limit == 19


def _draining_vegas() -> Vegas:
    """Vegas at limit 40 with a drain probe due after one window, no-load RTT 10 ms."""
    v = Vegas(40, 1, 1000, smoothing=1.0, probe_multiplier=1, probe="drain", window=1,
              rng=random.Random(0))  # fmt: skip
    v.update(0.010, 40, False)
    return v


def test_vegas_drain_probe_measures_a_short_queue_and_restores_the_limit() -> None:
    v = _draining_vegas()
    v.limit = 40.0
    # Keep the algorithm happy (queue between alpha and beta) until the probe starts.
    while v.limit == 40:
        v.update(0.0112, 40, False)
    assert v.limit == 20  # halved while probing
    # The 39 calls admitted before the drain finish with the loaded RTT: skipped.
    for _ in range(39):
        v.update(0.030, 40, False)
    assert v.rtt_noload == 0.010
    # The next 20 calls ran against half the limit.
    for i in range(20):
        v.update(0.012 if i % 2 else 0.014, 20, False)
    assert v.rtt_noload == pytest.approx(0.013)
    assert v.limit == 40


def test_vegas_drain_probe_still_backs_off_on_drops() -> None:
    v = _draining_vegas()
    while v.limit == 40:
        v.update(0.0112, 40, False)
    for _ in range(59):
        v.update(0.010, 20, True)
    assert v.limit < 40


def simulate(limiter: AdaptiveLimiter, capacity: int, samples: int, seed: int) -> list[int]:
    """A closed loop of 3x capacity callers on a dependency whose latency grows past
    ``capacity`` calls in flight (+-10% noise); returns the limit after each call."""
    rng = random.Random(seed)
    base = 0.02
    now = 0.0
    events: list[tuple[float, int, float]] = []  # (time, caller, latency of a call ending or 0)
    inflight = 0
    for caller in range(3 * capacity):
        heapq.heappush(events, (rng.uniform(0, base), caller, 0.0))
    limits = []
    while len(limits) < samples:
        now, caller, latency = heapq.heappop(events)
        if latency:  # a call finished
            inflight -= 1
            limiter.release(latency, False)
            limits.append(limiter.limit)
        if limiter.try_acquire():
            inflight += 1
            latency = base * max(1.0, inflight / capacity) * rng.lognormvariate(0, 0.1)
            heapq.heappush(events, (now + latency, caller, latency))
        else:
            heapq.heappush(events, (now + base, caller, 0.0))
    return limits


def test_ours_tracks_capacity_where_the_reference_stays_low_under_noise() -> None:
    ours = simulate(AdaptiveLimiter(AdaptiveLimit(), random.Random(1)), 32, 20_000, 1)
    reference = simulate(
        AdaptiveLimiter(AdaptiveLimit(probe="reset", window=1), random.Random(1)), 32, 20_000, 1
    )
    window_only = simulate(
        AdaptiveLimiter(AdaptiveLimit(probe="reset"), random.Random(1)), 32, 20_000, 1
    )
    late = slice(5_000, None)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert 29 <= mean(ours[late]) <= 42  # near the capacity of 32
    assert mean(reference[late]) < 26  # the luckiest sample as baseline: stuck low
    assert mean(window_only[late]) > 42  # probe resets to a loaded RTT: drifts up


# -- Gradient2 and AIMD ----------------------------------------------------------------------


def test_gradient2_arithmetic_and_drift() -> None:
    g = Gradient2(20, 20, 200, smoothing=0.2, queue_size=4, long_window=600, rtt_tolerance=1.5)
    g.update(0.010, 20, False)
    assert g.limit == pytest.approx(20.8)  # gradient 1: L + queue_size, smoothed
    g.update(0.010, 5, False)  # app-limited
    assert g.limit == pytest.approx(20.8)
    g.update(0.030, 21, False)  # long RTT (warm-up mean) 0.0167: gradient 1.5 * 0.0167 / 0.03
    gradient = 1.5 * (0.05 / 3) / 0.030
    assert g.limit == pytest.approx(20.8 * 0.8 + (20.8 * gradient + 4) * 0.2)
    previous = g.limit
    g.update(0.200, 21, False)  # far slower: the gradient stops at 0.5, the limit at min
    assert previous * 0.8 + (previous * 0.5 + 4) * 0.2 < 20
    assert g.limit == 20
    g.update(0.010, 21, True)  # drops are not used
    assert g.long_rtt > 0.010
    # A sustained overload: RTT 3x for good. The long RTT follows it, and the limit climbs.
    g = Gradient2(20, 20, 200, smoothing=0.2, queue_size=4, long_window=600, rtt_tolerance=1.5)
    for _ in range(10):
        g.update(0.010, 20, False)
    for _ in range(5000):
        g.update(0.030, int(g.limit), False)
    assert g.long_rtt == pytest.approx(0.030, rel=0.01)
    assert g.limit == 200


def test_gradient2_cuts_a_stale_long_rtt() -> None:
    g = Gradient2(20, 20, 200, smoothing=0.2, queue_size=4, long_window=600, rtt_tolerance=1.5)
    for _ in range(10):
        g.update(0.100, 20, False)
    g.update(0.010, 20, False)
    assert g.long_rtt < 0.100 * 0.99 * 0.96


def test_aimd_arithmetic() -> None:
    a = Aimd(20, 5, 30, backoff_ratio=0.9, timeout=1.0)
    a.update(0.010, 10, False)
    assert a.limit == 21
    a.update(0.010, 9, False)  # under half in use: no increase
    assert a.limit == 21
    a.update(0.010, 21, True)
    assert a.limit == 18
    a.update(2.0, 18, False)  # slower than timeout: a drop
    assert a.limit == 16
    for _ in range(100):
        a.update(0.010, 30, False)
    assert a.limit == 30
    for _ in range(100):
        a.update(0.010, 30, True)
    assert a.limit == 5


# -- the limiter ------------------------------------------------------------------------------


def fixed(n: int, wait: float = 0.0) -> AdaptiveLimiter:
    return AdaptiveLimiter(AdaptiveLimit("aimd", initial=n, min=n, max=n, wait=wait))


def test_limiter_admits_up_to_the_limit_and_follows_the_algorithm() -> None:
    limiter = AdaptiveLimiter(AdaptiveLimit("aimd", initial=2, min=1, max=10))
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    assert (limiter.limit, limiter.inflight, limiter.last_rtt) == (2, 2, None)
    limiter.release(0.05, False)  # 2 in flight of 2: AIMD grows
    assert (limiter.limit, limiter.inflight, limiter.last_rtt) == (3, 1, 0.05)
    assert limiter.try_acquire() and limiter.try_acquire()
    limiter.release(0.5, True)
    assert limiter.limit == 2
    limiter.give_back()  # a call that never ran: no sample
    assert (limiter.limit, limiter.inflight, limiter.last_rtt) == (2, 1, 0.5)
    limiter.release(0.01, False)
    with pytest.raises(RuntimeError):  # more releases than permits would admit extra calls
        limiter.release(0.01, False)
    with pytest.raises(RuntimeError):
        limiter.give_back()
    assert limiter.inflight == 0


def test_sync_waiters_are_served_in_order() -> None:
    limiter = fixed(1, wait=30.0)
    assert limiter.try_acquire()
    order: list[int] = []
    threads = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: (limiter.acquire_sync(), order.append(i)))
        t.start()
        threads.append(t)
        while limiter.waiting < i + 1:  # enqueue them in a known order
            threading.Event().wait(0.001)
    assert not limiter.try_acquire()  # a caller that does not wait never jumps the queue
    for i in range(4):
        limiter.release(0.01, False)
        threads[i].join(5)
        assert order == list(range(i + 1))
    assert limiter.inflight == 1
    limiter.release(0.01, False)
    assert limiter.inflight == 0


def test_sync_wait_times_out_without_a_permit() -> None:
    limiter = fixed(1)
    assert limiter.try_acquire()
    assert limiter.acquire_sync(0.01) is False
    assert (limiter.inflight, limiter.waiting) == (1, 0)
    assert limiter.acquire_sync(0) is False  # no wait: try_acquire


def test_sync_waiter_interrupted_after_its_grant_passes_the_permit_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = fixed(1)
    assert limiter.try_acquire()
    # The grant lands while the waiter is being interrupted: it must not keep the permit.
    from resilience.circuit import _adaptive

    real_lock = threading.Lock

    class Interrupted:
        def __init__(self) -> None:
            self._lock = real_lock()

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if timeout == -1:
                return self._lock.acquire()
            limiter.release(0.01, False)  # the permit is granted to this waiter...
            raise KeyboardInterrupt  # ...which is interrupted before it notices

        def release(self) -> None:
            self._lock.release()

    monkeypatch.setattr(_adaptive, "_new_gate", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire_sync(5.0)
    assert (limiter.inflight, limiter.waiting) == (0, 0)
    assert limiter.try_acquire()


async def test_async_waiters_in_order_and_cancellation_never_leaks() -> None:
    limiter = fixed(1, wait=30.0)
    assert limiter.try_acquire()
    first = asyncio.create_task(limiter.acquire_async())
    second = asyncio.create_task(limiter.acquire_async())
    third = asyncio.create_task(limiter.acquire_async())
    await asyncio.sleep(0)
    assert limiter.waiting == 3
    second.cancel()  # cancelled while queued: leaves the queue
    with pytest.raises(asyncio.CancelledError):
        await second
    assert limiter.waiting == 2
    limiter.release(0.01, False)  # granted to `first`...
    first.cancel()  # ...which is cancelled before it runs: the permit goes to `third`
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await third is True
    assert (limiter.inflight, limiter.waiting) == (1, 0)


async def test_async_wait_times_out() -> None:
    limiter = fixed(1)
    assert limiter.try_acquire()
    assert await limiter.acquire_async(0.01) is False
    assert (limiter.inflight, limiter.waiting) == (1, 0)
    limiter.release(0.01, False)
    assert await limiter.acquire_async(1.0) is True


async def test_a_thread_releasing_wakes_an_async_waiter() -> None:
    limiter = fixed(1)
    assert limiter.try_acquire()
    waiter = asyncio.create_task(limiter.acquire_async(30.0))
    await asyncio.sleep(0)
    t = threading.Thread(target=limiter.release, args=(0.01, False))
    t.start()
    assert await waiter is True
    t.join()


def test_limit_exceeded_error_is_a_bulkhead_rejection() -> None:
    err = LimitExceededError("ratings", 12, 12, waited=0.05)
    assert isinstance(err, BulkheadFullError) and isinstance(err, RejectedError)
    assert (err.dependency, err.limit, err.inflight, err.waited) == ("ratings", 12, 12, 0.05)
    assert "limit 12" in str(err) and "0.050s" in str(err)


def test_a_waiter_whose_loop_closed_does_not_keep_the_permit() -> None:
    limiter = fixed(1)
    assert limiter.try_acquire()
    loop = asyncio.new_event_loop()
    waiter = loop.create_task(limiter.acquire_async(30.0))
    loop.run_until_complete(asyncio.sleep(0))
    assert limiter.waiting == 1
    loop.close()  # the waiting task dies with its loop
    limiter.release(0.01, False)  # the grant cannot be delivered: the permit comes back
    assert (limiter.inflight, limiter.waiting) == (0, 0)
    waiter.get_coro().close()  # what garbage collection does to it: runs its cleanup
    waiter._log_destroy_pending = False  # type: ignore[attr-defined]
    assert (limiter.inflight, limiter.waiting) == (0, 0)  # not given back twice
    assert limiter.try_acquire()
