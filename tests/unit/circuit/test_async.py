"""Coroutine calls: timeouts by cancellation, external cancellation, async fallbacks, limits."""

from __future__ import annotations

import asyncio

import pytest

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    FallbackFailedError,
    State,
    protect,
    registry,
)
from resilience.circuit import OUTCOMES


class Boom(Exception):
    pass


def counts(name: str) -> dict[str, int]:
    dep = registry().dependency(name)
    return dict(zip(OUTCOMES, dep.window.totals().counts, strict=True))


async def test_timeout_cancels_the_coroutine_and_raises_call_timeout() -> None:
    cancelled = asyncio.Event()

    @protect("svc", timeout=0.05)
    async def hangs() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(CallTimeoutError) as info:
        await hangs()
    assert loop.time() - t0 < 0.5
    assert cancelled.is_set()
    assert not isinstance(info.value, asyncio.CancelledError)
    assert counts("svc")["timeout"] == 1
    # the task is not left cancelled: it can go on awaiting
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_many_concurrent_timeouts_each_fire_once() -> None:
    @protect("svc", timeout=0.3, max_concurrent=50, min_calls=1000)
    async def maybe_hang(i: int) -> int:
        await asyncio.sleep(0.01 if i % 2 else 5)  # a loaded machine must not make 0.01 a timeout
        return i

    results = await asyncio.gather(*(maybe_hang(i) for i in range(40)), return_exceptions=True)
    assert [r for r in results if isinstance(r, int)] == list(range(1, 40, 2))
    assert all(isinstance(r, CallTimeoutError) for r in results[::2])
    c = counts("svc")
    assert c["timeout"] == 20 and c["success"] == 20


async def test_a_timeout_lowered_at_runtime_fires_on_time() -> None:
    @protect("svc", timeout=5.0, min_calls=1000)
    async def hangs() -> None:
        await asyncio.sleep(10)

    first = asyncio.ensure_future(hangs())  # deadline in 5 s
    await asyncio.sleep(0)
    registry().dependency("svc").update_policy(timeout=0.05)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(CallTimeoutError):
        await hangs()
    assert loop.time() - t0 < 1.0
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_external_cancellation_passes_through_uncounted() -> None:
    @protect("svc", timeout=5)
    async def slow() -> None:
        await asyncio.sleep(10)

    task = asyncio.ensure_future(slow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    c = counts("svc")
    assert c["timeout"] == 0 and c["failure"] == 0
    assert registry().dependency("svc").permits.in_use == 0


async def test_coroutine_fallback_and_failing_fallback() -> None:
    async def fb(x: int) -> int:
        return -x

    @protect("svc", fallback=fb)
    async def fails(x: int) -> int:
        raise Boom()

    assert await fails(3) == -3

    async def bad_fb(x: int) -> int:
        raise KeyError()

    @protect("svc2", fallback=bad_fb)
    async def fails2(x: int) -> int:
        raise Boom()

    with pytest.raises(FallbackFailedError) as info:
        await fails2(1)
    assert isinstance(info.value.error, Boom) and isinstance(info.value.__cause__, KeyError)


async def test_max_concurrent_rejects_coroutines() -> None:
    gate = asyncio.Event()

    @protect("svc", max_concurrent=2)
    async def wait() -> str:
        await gate.wait()
        return "ok"

    running = [asyncio.ensure_future(wait()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await wait()
    gate.set()
    assert await asyncio.gather(*running) == ["ok", "ok"]
    assert counts("svc")["rejected"] == 1


async def test_async_circuit_opens_and_recovers_through_the_general_path() -> None:
    from resilience import testing

    healthy = [False]

    @protect("svc", min_calls=3, open_duration=2, fallback="fb")
    async def call() -> str:
        if not healthy[0]:
            raise Boom()
        return "ok"

    with testing.fake_clock() as clock:
        assert [await call() for _ in range(3)] == ["fb"] * 3
        dep = registry().dependency("svc")
        assert dep.state is State.OPEN
        assert await call() == "fb"
        assert counts("svc")["short_circuited"] == 1
        clock.advance(2)
        healthy[0] = True
        assert await call() == "ok"
        assert dep.state is State.CLOSED


async def test_dependency_acall_without_decorating() -> None:
    dep = registry().dependency("svc", min_calls=1)

    async def fails() -> None:
        raise Boom()

    with pytest.raises(Boom):
        await dep.acall(fails)
    with pytest.raises(CircuitOpenError):
        await dep.acall(fails)
