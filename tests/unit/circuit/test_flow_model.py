"""What follows each attempt, checked against a reference model on every driver (hypothesis).

The model is written from the contract (DESIGN.md, ``Retry`` and ``protect``'s docstrings),
independently of ``_flow``: a script says how each attempt ends; the model says what the caller
gets and what the dependency's window counts (successes, failures, ignored errors, retries,
fallbacks, exceptions thrown). Every way a call runs must walk the same decisions: the
decorator's fast paths, the general sync and async drivers, a call with a deadline (the loop from
its first attempt), and the thread pool, called or awaited. A driver that decided anything on
its own, and drifted, would fail here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import pytest
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import FallbackFailedError, Policy, Retry
from resilience.circuit import MISSING, OUTCOMES, Dependency, Guard
from resilience.circuit._dependency import PROBATION_CALLS
from resilience.testing import FakeClock

# How an attempt ends: a result, a result ``on_result`` retries, an error the default ``on``
# retries (a network error), one it does not, and one the call site ignores.
STEPS = ("ok", "again", "conn", "boom", "key")
FALLBACKS = ("missing", "static", "callable", "failing")
PATHS = (
    "sync fast",
    "sync general",
    "sync pool",
    "async fast",
    "async general",
    "async pool",
)


def isolation_of(path: str) -> Literal["thread", "semaphore"]:
    return "thread" if path.endswith("pool") else "semaphore"


def raise_for(step: str) -> Exception:
    return {
        "conn": ConnectionResetError("reset"),
        "boom": ValueError("boom"),
        "key": KeyError("key"),
    }[step]


def model(
    script: list[str], attempts: int, on_result: bool, fallback: str
) -> tuple[str, Any, Counter[str]]:
    """What the caller gets ("value" or "raise", and what) and what the window counts."""
    counts: Counter[str] = Counter()
    retrying = attempts > 1
    for i, step in enumerate(script[:attempts]):
        last = i + 1 == attempts
        if step == "key":  # ignored: raised to the caller, uncounted, no retry, no fallback
            counts["ignored"] += 1
            counts["exception_thrown"] += 1
            return "raise", KeyError, counts
        if step in ("ok", "again"):
            counts["success"] += 1
            if step == "again" and on_result and retrying and not last:
                counts["retried"] += 1
                continue
            return "value", step, counts
        counts["failure"] += 1
        if step == "conn" and retrying and not last:
            counts["retried"] += 1
            continue
        error = type(raise_for(step))
        if fallback == "missing":
            counts["fallback_missing"] += 1
            counts["exception_thrown"] += 1
            return "raise", error, counts
        if fallback == "failing":
            counts["fallback_failure"] += 1
            counts["exception_thrown"] += 1
            return "raise", FallbackFailedError, counts
        counts["fallback_success"] += 1
        return "value", "fb", counts
    raise AssertionError("the script is as long as the attempts")


def fallback_of(kind: str) -> Any:
    if kind == "missing":
        return MISSING
    if kind == "static":
        return "fb"
    if kind == "callable":
        return lambda: "fb"

    def failing() -> Any:
        raise RuntimeError("the fallback failed too")

    return failing


def counted(dep: Dependency) -> Counter[str]:
    totals = dep.window.totals().counts
    return Counter({name: n for name, n in zip(OUTCOMES, totals, strict=True) if n})


def run_path(path: str, guard: Guard, script: list[str]) -> tuple[str, Any]:
    """Call through ``path``; the attempts end as ``script`` says."""
    steps = iter(script)

    def fn() -> str:
        step = next(steps)
        if step in ("ok", "again"):
            return step
        raise raise_for(step)

    async def afn() -> str:
        await asyncio.sleep(0)
        return fn()

    call: Callable[[], Any]
    if path == "sync fast":
        call = guard.fast_sync(fn)
    elif path in ("sync general", "sync pool"):
        call = lambda: guard.call(fn, None, (), {})  # noqa: E731
    else:
        if path == "async fast":
            make = guard.fast_async(afn)
        elif path == "async general":
            make = lambda: guard.acall(afn, None, (), {})  # noqa: E731
        else:
            make = lambda: guard.acall_sync(fn, (), {})  # noqa: E731

        async def awaited() -> Any:
            return await make()

        call = lambda: asyncio.run(awaited())  # noqa: E731
    try:
        return "value", call()
    except Exception as exc:
        return "raise", type(exc)


@settings(max_examples=150)
@given(
    script=st.lists(st.sampled_from(STEPS), min_size=4, max_size=4),
    attempts=st.integers(1, 4),
    on_result=st.booleans(),
    fallback=st.sampled_from(FALLBACKS),
    deadline=st.booleans(),
    path=st.sampled_from(PATHS),
)
def test_every_driver_walks_the_models_flow(
    script: list[str], attempts: int, on_result: bool, fallback: str, deadline: bool, path: str
) -> None:
    policy = Policy(isolation=isolation_of(path), min_calls=10**9, timeout=60.0, pool_size=1)
    dep = Dependency("flow", policy, clock=FakeClock(100.0))
    dep._first_calls(PROBATION_CALLS)  # decorated calls take the fast paths
    retry = Retry(
        attempts=attempts,
        wait=tenacity.wait_none(),
        on_result=(lambda result: result == "again") if on_result else None,
        budget=None,
    )
    guard = Guard(
        dep,
        fallback=fallback_of(fallback),
        ignore=KeyError,
        retry=retry,
        deadline=1000.0 if deadline else None,
    )
    try:
        got = run_path(path, guard, script)
    finally:
        if dep.pool is not None:
            dep.pool.close()
    kind, value, counts = model(script, attempts, on_result, fallback)
    assert got == (kind, value)
    assert counted(dep) == counts
    assert dep.permits.in_use == 0
    assert dep.breaker.trials_in_flight == 0


@pytest.mark.parametrize("path", PATHS)
def test_the_model_itself_retries_then_falls_back(path: str) -> None:
    # One worked example per driver, so a failure names the path and the model stays honest.
    script = ["conn", "again", "boom", "ok"]
    kind, value, counts = model(script, 4, True, "static")
    assert (kind, value) == ("value", "fb")
    assert counts == Counter(success=1, failure=2, retried=2, fallback_success=1)
    policy = Policy(isolation=isolation_of(path), min_calls=10**9)
    dep = Dependency("flow", policy, clock=FakeClock(1.0))
    dep._first_calls(PROBATION_CALLS)
    retry = Retry(
        attempts=4, wait=tenacity.wait_none(), on_result=lambda r: r == "again", budget=None
    )
    guard = Guard(dep, fallback="fb", ignore=KeyError, retry=retry)
    try:
        assert run_path(path, guard, script) == ("value", "fb")
    finally:
        if dep.pool is not None:
            dep.pool.close()
    assert counted(dep) == counts
