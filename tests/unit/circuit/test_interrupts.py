"""BaseExceptions (KeyboardInterrupt, SystemExit, cancellation) pass through a protected call
without deciding an outcome, but never leave a permit, a worker, a trial slot or a deadline
behind (issue 16, "Circuit: BaseException")."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Iterator

import pytest

from resilience import ConfigError, State, protect, registry
from resilience import testing as rtesting
from resilience.circuit import OUTCOMES
from resilience.circuit._dependency import PROBATION_CALLS


class Abort(BaseException):
    """A BaseException of the user's own, like KeyboardInterrupt but safe to raise in a test."""


def counts(name: str) -> dict[str, int]:
    dep = registry().dependency(name)
    return dict(zip(OUTCOMES, dep.window.totals().counts, strict=True))


def past_first_calls(name: str) -> None:
    """Let the decorator's fast path serve the dependency (after its first calls)."""
    registry().dependency(name)._first_calls(PROBATION_CALLS)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, Abort])
def test_semaphore_fast_path_returns_the_permit(exc_type: type[BaseException]) -> None:
    raising = [True]

    @protect("svc", isolation="semaphore", max_concurrent=2)
    def call() -> str:
        if raising[0]:
            raise exc_type()
        return "ok"

    past_first_calls("svc")

    for _ in range(5):  # more than max_concurrent: a leak would reject the next call
        with pytest.raises(exc_type):
            call()
    raising[0] = False
    assert call() == "ok"
    dep = registry().dependency("svc")
    assert dep.permits.in_use == 0
    c = counts("svc")
    assert c["failure"] == 0 and c["rejected"] == 0 and c["success"] == 1


def test_semaphore_general_path_returns_the_permit() -> None:
    dep = registry().dependency("svc", isolation="semaphore", max_concurrent=1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            dep.call(interrupted)
    assert dep.call(lambda: "ok") == "ok"
    assert dep.permits.in_use == 0


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, Abort])
def test_thread_isolation_hands_the_caller_the_exception_and_keeps_its_workers(
    exc_type: type[BaseException],
) -> None:
    raising = [True]

    @protect("svc", pool_size=1, queue_size=0, timeout=5.0)
    def call() -> str:
        if raising[0]:
            raise exc_type("from the worker")
        return "ok"

    for _ in range(3):
        with pytest.raises(exc_type) as info:
            call()
        assert str(info.value) == "from the worker"
    raising[0] = False
    assert call() == "ok"  # a dead worker would leave nobody to run this: it would time out
    pool = registry().dependency("svc").pool
    assert pool is not None
    assert sum(t.is_alive() for t in pool._threads) == 1
    assert pool.permits.in_use == 0 and pool.running == 0
    assert counts("svc")["failure"] == 0


def test_a_caller_interrupted_while_waiting_abandons_its_job_cleanly() -> None:
    """KeyboardInterrupt reaching the caller while it waits for the worker (Ctrl-C)."""
    release = threading.Event()
    dep = registry().dependency("svc", pool_size=1, queue_size=0, timeout=5.0)
    pool = dep._thread_pool()
    original = pool.submit

    def submit_then_interrupt(*a: object, **k: object) -> object:
        original(*a, **k)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    pool.submit = submit_then_interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        dep.call(lambda: release.wait(5))
    pool.submit = original  # type: ignore[method-assign]
    release.set()
    for _ in range(500):
        if pool.permits.in_use == 0:
            break
        threading.Event().wait(0.01)
    assert pool.permits.in_use == 0 and pool.abandoned == 0
    assert dep.call(lambda: "ok") == "ok"


@pytest.mark.parametrize("isolation", ["semaphore", "thread"])
def test_a_half_open_trial_ending_in_a_base_exception_frees_its_slot(isolation: str) -> None:
    mode = ["fail"]

    @protect("svc", isolation=isolation, min_calls=1, open_duration=1.0)
    def call() -> str:
        if mode[0] == "fail":
            raise ConnectionError()
        if mode[0] == "interrupt":
            raise KeyboardInterrupt
        return "ok"

    dep = registry().dependency("svc")
    with rtesting.fake_clock() as clock:
        with pytest.raises(ConnectionError):
            call()
        assert dep.state is State.OPEN
        clock.advance(1.0)
        mode[0] = "interrupt"
        with pytest.raises(KeyboardInterrupt):
            call()
        assert dep.state is State.HALF_OPEN
        mode[0] = "ok"
        assert call() == "ok"  # the slot was released: this call is the trial
    assert dep.state is State.CLOSED


async def test_async_base_exception_leaves_no_deadline_behind() -> None:
    @protect("svc", timeout=0.05, max_concurrent=1)
    async def call() -> None:
        raise Abort()

    past_first_calls("svc")

    async def caller() -> str:
        with pytest.raises(Abort):
            await call()
        await asyncio.sleep(0.2)  # unrelated work, well past the protected call's deadline
        return "survived"

    assert await asyncio.ensure_future(caller()) == "survived"
    dep = registry().dependency("svc")
    assert dep.permits.in_use == 0
    assert counts("svc")["timeout"] == 0 and counts("svc")["failure"] == 0


async def test_async_general_path_base_exception_frees_permit_trial_and_deadline() -> None:
    mode = ["fail"]

    @protect("svc", timeout=0.05, max_concurrent=1, min_calls=1, open_duration=1.0)
    async def call() -> str:
        if mode[0] == "fail":
            raise ConnectionError()
        if mode[0] == "abort":
            raise Abort()
        return "ok"

    dep = registry().dependency("svc")
    with rtesting.fake_clock() as clock:
        with pytest.raises(ConnectionError):
            await call()
        clock.advance(1.0)
        mode[0] = "abort"
        with pytest.raises(Abort):
            await call()  # a half-open trial, through the general path
        await asyncio.sleep(0.15)  # a leaked deadline would cancel this task here
        mode[0] = "ok"
        assert await call() == "ok"
    assert dep.state is State.CLOSED and dep.permits.in_use == 0


def test_generator_functions_are_refused_with_advice() -> None:
    def rows() -> Iterator[int]:
        yield 1

    async def arows():  # type: ignore[no-untyped-def]
        yield 1

    for fn in (rows, arows):
        with pytest.raises(ConfigError) as info:
            protect("svc")(fn)
        assert info.value.field == "fn"
        assert "generator" in str(info.value) and "list(" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_fresh_pools_and_permits() -> None:
    """Workers and permits held in the parent at fork time do not exist in the child."""
    release = threading.Event()
    inside = threading.Event()

    @protect("pool", pool_size=1, queue_size=0, timeout=2.0)
    def pooled(x: int) -> int:
        if x < 0:
            inside.set()
            release.wait(10)
        return x * 2

    sem_inside = threading.Event()

    @protect("sem", isolation="semaphore", max_concurrent=1)
    def guarded(x: int) -> int:
        if x < 0:
            sem_inside.set()
            release.wait(10)
        return x + 1

    holders = [
        threading.Thread(target=pooled, args=(-1,)),
        threading.Thread(target=guarded, args=(-1,)),
    ]
    for t in holders:
        t.start()
    assert inside.wait(5) and sem_inside.wait(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "fork() with threads" (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        code = 1
        try:
            ok = pooled(21) == 42 and guarded(1) == 2
            pool = registry().dependency("pool").pool
            ok = ok and pool is not None and pool.abandoned == 0 and pool.running == 0
            code = 0 if ok else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    release.set()
    for t in holders:
        t.join(5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pooled(1) == 2 and guarded(1) == 2  # the parent is untouched
