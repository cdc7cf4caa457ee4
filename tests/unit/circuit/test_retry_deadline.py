"""Retries and timeouts as users expect them (issue 12, section 4): what is retried, results
that ask for a retry, a deadline over the whole call, sync calls on an event loop's thread, and
``Dependency.acall`` with a sync function."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
import warnings
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import tenacity

from resilience import (
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    Retry,
    protect,
    registry,
)
from resilience import testing as rtesting
from resilience.circuit import NETWORK_ERRORS, OUTCOMES
from resilience.circuit._dependency import PROBATION_CALLS

NO_WAIT = tenacity.wait_none()


def counts(name: str) -> dict[str, int]:
    return dict(zip(OUTCOMES, registry().dependency(name).window.totals().counts, strict=True))


def failing_then(errors: list[BaseException], result: Any = "ok") -> tuple[list[int], Any]:
    calls: list[int] = []

    def fn() -> Any:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, fn


# -- what is retried --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset"),
        TimeoutError("slow"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectorError(
            types.SimpleNamespace(ssl=None, host="h", port=1),  # type: ignore[arg-type]
            OSError(111, "refused"),
        ),
    ],
)
def test_the_default_retries_network_errors_and_timeouts(error: Exception) -> None:
    calls, fn = failing_then([error])
    protected = protect("svc", isolation="semaphore", retry=Retry(wait=NO_WAIT))(fn)
    assert protected() == "ok" and len(calls) == 2


def test_the_default_does_not_retry_other_errors() -> None:
    calls, fn = failing_then([ValueError("bad input")])
    with pytest.raises(ValueError):
        protect("svc", isolation="semaphore", retry=Retry(wait=NO_WAIT))(fn)()
    assert len(calls) == 1


@pytest.fixture
def fake_httpx() -> Iterator[types.ModuleType]:
    """A stand-in httpx module: the default looks only at client modules already imported."""
    module = types.ModuleType("httpx")

    class TimeoutException(Exception):
        pass

    class NetworkError(Exception):
        pass

    class RemoteProtocolError(Exception):
        pass

    class HTTPStatusError(Exception):
        pass

    for cls in (TimeoutException, NetworkError, RemoteProtocolError, HTTPStatusError):
        setattr(module, cls.__name__, cls)
    previous = sys.modules.get("httpx")
    sys.modules["httpx"] = module
    yield module
    if previous is None:
        del sys.modules["httpx"]
    else:
        sys.modules["httpx"] = previous


def test_the_default_follows_the_installed_clients(fake_httpx: types.ModuleType) -> None:
    import requests

    assert NETWORK_ERRORS(fake_httpx.NetworkError())
    assert NETWORK_ERRORS(fake_httpx.TimeoutException())
    assert not NETWORK_ERRORS(fake_httpx.HTTPStatusError())
    assert NETWORK_ERRORS(requests.ConnectionError())
    assert NETWORK_ERRORS(requests.ReadTimeout())
    assert not NETWORK_ERRORS(requests.HTTPError())


def test_on_takes_a_predicate_on_the_exception() -> None:
    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            self.status = status

    retry = Retry(wait=NO_WAIT, on=lambda e: isinstance(e, HTTPError) and e.status >= 500)
    calls, fn = failing_then([HTTPError(503)])
    assert protect("a", isolation="semaphore", retry=retry)(fn)() == "ok"
    assert len(calls) == 2
    calls, fn = failing_then([HTTPError(404)])
    with pytest.raises(HTTPError):
        protect("b", isolation="semaphore", retry=retry)(fn)()
    assert len(calls) == 1


def test_on_result_retries_a_result_and_returns_the_last_one() -> None:
    statuses = iter([503, 503, 200])
    seen = []

    @protect("svc", isolation="semaphore", retry=Retry(wait=NO_WAIT, on_result=lambda r: r >= 500))
    def fetch() -> int:
        seen.append(1)
        return next(statuses)

    assert fetch() == 200 and len(seen) == 3
    always = protect(
        "svc2",
        isolation="semaphore",
        retry=Retry(attempts=2, wait=NO_WAIT, on_result=lambda r: r >= 500),
    )(lambda: 503)
    assert always() == 503  # attempts used up: the caller gets the last result


async def test_async_retries_on_results_and_errors() -> None:
    outcomes: list[Any] = [ConnectionResetError(), 503, 200]

    @protect("svc", retry=Retry(wait=NO_WAIT, on_result=lambda r: r == 503))
    async def fetch() -> int:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return int(item)

    assert await fetch() == 200 and outcomes == []


@pytest.mark.parametrize("bad", ["ConnectionError", 42, (ValueError, "x")])
def test_bad_on_values_name_the_field(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Retry(on=bad)
    assert info.value.field == "on"
    if isinstance(bad, str):
        assert "string" in str(info.value) and "('C'" not in str(info.value)


def test_refusals_and_ignored_errors_are_never_retried() -> None:
    calls, fn = failing_then([KeyError("bad request")])
    retry = Retry(wait=NO_WAIT, on=lambda e: True)
    with pytest.raises(KeyError):
        protect("svc", isolation="semaphore", ignore=KeyError, retry=retry)(fn)()
    assert len(calls) == 1
    with rtesting.forced("svc", "open"), pytest.raises(CircuitOpenError):
        protect("svc", retry=retry)(fn)()
    assert len(calls) == 1


# -- deadline ---------------------------------------------------------------------------------


def test_deadline_bounds_attempts_and_waits_together() -> None:
    """timeout 0.2 per attempt, 4 attempts, 0.25 s back-off: 1.55 s without a deadline."""
    with rtesting.fake_clock() as clock:
        starts: list[float] = []

        @protect(
            "svc",
            isolation="semaphore",
            timeout=0.2,
            deadline=0.6,
            min_calls=100,
            retry=Retry(attempts=4, wait=tenacity.wait_fixed(0.25)),
        )
        def slow() -> str:
            starts.append(clock())
            clock.advance(0.3)  # past the attempt's timeout
            return "late"

        t0 = clock()
        with pytest.raises(CallTimeoutError):
            slow()
        # attempt at 0, back-off to 0.55, a second attempt cut at the deadline (0.6);
        # no back-off is started that would end past the deadline
        assert starts == [t0, t0 + 0.55]
        assert clock() - t0 <= 0.6 + 0.3  # the last attempt cannot be preempted (same thread)
    c = counts("svc")
    assert c["timeout"] == 2 and c["retried"] == 1


async def test_async_deadline_cuts_the_whole_call_in_real_time() -> None:
    attempts = []

    @protect(
        "svc",
        timeout=0.2,
        deadline=0.3,
        min_calls=100,
        retry=Retry(attempts=4, wait=tenacity.wait_fixed(0.01)),
    )
    async def hangs() -> None:
        attempts.append(1)
        await asyncio.sleep(5)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(CallTimeoutError):
        await hangs()
    elapsed = loop.time() - t0
    assert 0.28 <= elapsed < 0.75, elapsed  # without the deadline: 4 x 0.2 s
    assert len(attempts) == 2  # 0.2 s, then what was left of the deadline


def test_thread_pool_deadline_in_real_time() -> None:
    release = threading.Event()

    @protect(
        "svc",
        timeout=0.2,
        deadline=0.3,
        pool_size=4,
        min_calls=100,
        retry=Retry(attempts=4, wait=NO_WAIT),
        fallback="fb",
    )
    def hangs() -> str:
        release.wait(5)
        return "late"

    t0 = time.monotonic()
    assert hangs() == "fb"
    assert time.monotonic() - t0 < 0.75  # without the deadline: 4 x 0.2 s
    release.set()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "1s", True])
def test_bad_deadlines_name_the_field(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        protect("svc", deadline=bad)
    assert info.value.field == "deadline"


# -- sync code on an event loop's thread --------------------------------------------------------


@pytest.mark.parametrize("isolation", ["semaphore", "thread"])
async def test_a_sync_call_on_the_loop_thread_warns_once_per_dependency(isolation: str) -> None:
    @protect("ratings", isolation=isolation)
    def get_ratings() -> int:
        return 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert get_ratings() == 1
        assert get_ratings() == 1
        registry().dependency("ratings").call(get_ratings)
    relevant = [w for w in caught if "event loop" in str(w.message)]
    assert len(relevant) == 1
    message = str(relevant[0].message)
    assert "'ratings'" in message and "get_ratings" in message
    assert "async def" in message and ".acall(" in message
    assert relevant[0].filename == __file__  # points at the caller's line


async def test_later_fast_calls_warn_when_they_hold_the_loop_up() -> None:
    """Past its first calls a dependency checks only calls long enough to hold a loop up."""
    with rtesting.fake_clock() as clock:
        durations = [0.0]

        @protect("ratings", isolation="semaphore")
        def get_ratings() -> int:
            clock.advance(durations[0])
            return 1

        registry().dependency("ratings")._first_calls(PROBATION_CALLS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert get_ratings() == 1  # took no time: not a blocked loop
            assert not caught
            durations[0] = 0.002
            assert get_ratings() == 1
    assert len(caught) == 1 and "'ratings'" in str(caught[0].message)
    assert caught[0].filename == __file__


def test_a_sync_call_off_the_loop_does_not_warn() -> None:
    protected = protect("ratings", isolation="semaphore")(lambda: 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert protected() == 1


# -- Dependency.acall with a sync function -----------------------------------------------------


async def test_acall_runs_a_sync_function_in_the_pool_without_blocking_the_loop() -> None:
    dep = registry().dependency("svc", pool_size=2, timeout=1.0)
    ticks = []

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(1)
            await asyncio.sleep(0.01)

    def blocking(x: int) -> tuple[int, str]:
        time.sleep(0.3)
        return x * 2, threading.current_thread().name

    ticking = asyncio.ensure_future(ticker())
    value, thread = await dep.acall(blocking, 21)
    ticked = len(ticks)
    await ticking
    assert value == 42 and thread.startswith("resilience-svc")
    assert ticked >= 2  # the loop ran while the function blocked its worker
    assert counts("svc")["success"] == 1


async def test_acall_of_a_sync_function_honours_the_timeout() -> None:
    dep = registry().dependency("svc", isolation="semaphore", timeout=0.05, min_calls=100)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(CallTimeoutError):
        await dep.acall(release.wait, 5)
    assert loop.time() - t0 < 2.0
    release.set()
    assert counts("svc")["timeout"] == 1


async def test_acall_of_a_sync_function_that_returns_a_coroutine_is_refused() -> None:
    async def work() -> int:
        return 1

    with pytest.raises(ConfigError) as info:
        await registry().dependency("svc").acall(lambda: work())
    assert "async def" in str(info.value)
