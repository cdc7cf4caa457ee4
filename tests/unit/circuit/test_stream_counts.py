"""What the Hystrix stream reads from a dependency: peak concurrency in the rolling window,
exceptions thrown to callers, failures with no fallback, latency percentiles."""

from __future__ import annotations

import asyncio
import threading

import pytest

from resilience import BulkheadFullError, protect, registry
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES


def counts(name: str) -> dict[str, int]:
    return dict(zip(OUTCOMES, registry().dependency(name).window.snapshot().counts, strict=True))


def hold(n: int, call: object) -> tuple[list[threading.Thread], threading.Event]:
    """Start ``n`` threads each inside ``call(release)``; returns them and the release event."""
    release = threading.Event()
    inside = threading.Barrier(n + 1)

    def run() -> None:
        call(inside, release)  # type: ignore[operator]

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    inside.wait(5)
    return threads, release


@pytest.mark.parametrize("isolation", ["semaphore", "thread"])
def test_peak_concurrency_of_sync_calls(isolation: str) -> None:
    with rtesting.fake_clock() as clock:

        @protect("svc", isolation=isolation, max_concurrent=5, pool_size=5, timeout=10)
        def work(inside: threading.Barrier, release: threading.Event) -> None:
            inside.wait(5)
            release.wait(5)

        dep = registry().dependency("svc")
        assert dep.peak_concurrency() == 0
        threads, release = hold(3, work)
        assert dep.peak_concurrency() == 3
        release.set()
        for t in threads:
            t.join(5)
        assert dep.peak_concurrency() == 3  # the peak stays for the rolling window...
        clock.advance(dep.policy.window + 1)
        assert dep.peak_concurrency() == 0  # ...and leaves with it


async def test_peak_concurrency_of_coroutines() -> None:
    gate = asyncio.Event()

    @protect("svc", max_concurrent=10)
    async def work() -> None:
        await gate.wait()

    tasks = [asyncio.ensure_future(work()) for _ in range(4)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert registry().dependency("svc").peak_concurrency() == 4


def test_exceptions_thrown_and_fallbacks_missing() -> None:
    no_fallback = protect("a", isolation="semaphore", min_calls=100)(
        lambda: (_ for _ in ()).throw(ConnectionError())
    )
    for _ in range(3):
        with pytest.raises(ConnectionError):
            no_fallback()
    c = counts("a")
    assert (c["exception_thrown"], c["fallback_missing"]) == (3, 3)

    served = protect("b", isolation="semaphore", fallback=1, min_calls=100)(
        lambda: (_ for _ in ()).throw(ConnectionError())
    )
    assert served() == 1
    c = counts("b")
    assert (c["exception_thrown"], c["fallback_missing"]) == (0, 0)

    def broken_fallback() -> int:
        raise KeyError()

    failing = protect("c", isolation="semaphore", fallback=broken_fallback, min_calls=100)(
        lambda: (_ for _ in ()).throw(ConnectionError())
    )
    with pytest.raises(Exception, match="fallback failed"):
        failing()
    c = counts("c")
    assert (c["exception_thrown"], c["fallback_missing"]) == (1, 0)


def test_a_refusal_with_no_fallback_is_a_missing_fallback_too() -> None:
    dep = registry().dependency("svc", isolation="semaphore", max_concurrent=1)
    ticket = dep.begin()  # holds the only permit
    with pytest.raises(BulkheadFullError):
        dep.call(lambda: 1)
    ticket.cancel()
    c = counts("svc")
    assert (c["rejected"], c["exception_thrown"], c["fallback_missing"]) == (1, 1, 1)


def test_ignored_errors_are_thrown_but_no_fallback_is_missing() -> None:
    bad = protect("svc", isolation="semaphore", ignore=KeyError)(
        lambda: (_ for _ in ()).throw(KeyError())
    )
    with pytest.raises(KeyError):
        bad()
    c = counts("svc")
    assert (c["ignored"], c["exception_thrown"], c["fallback_missing"]) == (1, 1, 0)


def test_percentiles_of_a_dependency_come_from_its_calls() -> None:
    with rtesting.fake_clock() as clock:

        @protect("svc", isolation="semaphore", timeout=5)
        def call(seconds: float) -> None:
            clock.advance(seconds)

        for _ in range(50):
            call(0.030)
        p50, p99 = registry().dependency("svc").window.percentiles([0.5, 0.99])
    assert p50 == pytest.approx(0.030, rel=0.02) and p99 == pytest.approx(0.030, rel=0.02)


def test_the_hystrix_command_message_carries_these_values() -> None:
    from resilience.web import hystrix_command

    with rtesting.fake_clock() as clock:

        @protect("ratings", isolation="semaphore", timeout=5, min_calls=100)
        def call(seconds: float, fail: bool = False) -> None:
            clock.advance(seconds)
            if fail:
                raise ConnectionError()

        for _ in range(99):
            call(0.030)
        call(0.080)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                call(0.030, fail=True)
        msg = hystrix_command(registry().dependency("ratings"))
    for key in ("latencyExecute", "latencyTotal"):
        latency = msg[key]
        assert latency["50"] == 30 and latency["99"] == 30 and latency["100"] == 80
        assert set(latency) == {"0", "25", "50", "75", "90", "95", "99", "99.5", "100"}
    assert msg["rollingCountExceptionsThrown"] == 2
    assert msg["rollingCountFallbackMissing"] == 2
    assert msg["rollingMaxConcurrentExecutionCount"] == 1
