"""Sync functions awaited from a coroutine (run in the dependency's thread pool, off the loop),
and the waits every async attempt shares: for a token (rate limit) and for a permit
(concurrency limit), what to wait for being decided by ``_throttle.take`` and the limit.

``Dependency.acall(sync_fn)`` (and a sync function awaited through a guard) must not block the
event loop: the call runs on a pool worker, the task awaits a future the worker resolves, and a
loop timer ends the wait at the attempt's timeout (the worker is then abandoned, as in
``_sync``). The same decisions as every attempt: admitted by the pool's limit (fixed, or the
adaptive one the pool follows), judged by ``Recorder._job_done`` as ``_sync``'s pool runner's
are, recorded by the dependency or an experiment's shadow.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ._breaker import RUN, State
from ._throttle import take
from ._timeout import attempt_timeout

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._bulkhead import ConcurrencyLimit
    from ._dependency import Dependency
    from ._record import Recorder

__all__ = ["acquire", "attempt_in_pool", "take_token"]

_CLOSED = State.CLOSED


async def _admit(dep: Dependency, deadline_at: float | None) -> int:
    """Breaker -> rate limit; returns the breaker's decision (refusals raise)."""
    breaker = dep.breaker
    decision = RUN if breaker.state is _CLOSED else dep._acquire()
    if dep._rate_limiter is not None:
        try:
            await take_token(dep, dep, deadline_at)
        except BaseException:
            breaker.release(decision)
            raise
    return decision


async def take_token(dep: Dependency, rec: Recorder, deadline_at: float | None) -> None:
    """The rate-limit step (``_sync.take_token``'s counterpart)."""
    bucket = dep._rate_limiter
    if bucket is None:
        return
    seconds = take(bucket, rec, dep._clock(), deadline_at)
    if seconds > 0.0:
        try:
            await dep._asleep(seconds)
        except BaseException:  # cancelled: the booked token goes to the next caller
            bucket.refund(dep._clock())
            raise


async def acquire(
    limit: ConcurrencyLimit,
    rec: Recorder,
    decision: int,
    clock: Callable[[], float],
    deadline_at: float | None,
) -> None:
    """The concurrency-limit step on the loop (``_sync.acquire``'s counterpart)."""
    if limit.wait <= 0:
        if not limit.try_acquire():
            raise rec._reject(limit, 0.0, decision)
        return
    before = clock()
    try:
        admitted = await limit.acquire_async(attempt_timeout(limit.wait, deadline_at, before))
    except BaseException:
        rec.breaker.release(decision)
        raise
    if not admitted:
        raise rec._reject(limit, clock() - before, decision)


def _wake(fut: asyncio.Future[bool], finished: bool) -> None:
    if not fut.done():
        fut.set_result(finished)


def _wake_from(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[bool]) -> None:
    # Called by the pool's worker thread when the job is done.
    loop.call_soon_threadsafe(_wake, fut, True)


async def attempt_in_pool(
    dep: Dependency,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    time_limit: float,
    deadline_at: float | None,
) -> tuple[int, Any]:
    """One pass for a sync function awaited from a coroutine: it runs in the thread pool."""
    decision = RUN if dep.lane else await _admit(dep, deadline_at)
    return await _in_pool(dep, decision, fn, args, kwargs, ignore, time_limit, deadline_at)


async def _in_pool(
    dep: Dependency,
    decision: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    time_limit: float,
    deadline_at: float | None,
    rec: Recorder | None = None,
    sample: bool = True,
    done: Callable[[], None] | None = None,
) -> tuple[int, Any]:
    # ``done``: called once the worker is through with the job (by the caller if none was made).
    if rec is None:
        rec = dep
    pool = dep._pool or dep._thread_pool()
    permits = pool.permits
    clock = dep._clock
    await acquire(permits, rec, decision, clock, deadline_at)
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[bool] = loop.create_future()
    start = clock()
    job = None

    def notify() -> None:
        _wake_from(loop, woken)
        if done is not None:
            done()

    try:
        job = pool.submit(fn, args, kwargs, notify, permits, not sample)
        timer = loop.call_later(time_limit, _wake, woken, False)
        try:
            finished = await woken  # True: the job is done; False: the time limit came first
        finally:
            timer.cancel()
    except BaseException:  # cancelled while waiting: the worker finishes on its own
        pool.give_up(job, permits, done)
        rec.breaker.release(decision)
        raise
    now = clock()
    if finished and job.error is None and inspect.isawaitable(job.result):
        if inspect.iscoroutine(job.result):
            job.result.close()
        rec.breaker.release(decision)
        raise ConfigError(
            "fn",
            f"{fn!r} is not a coroutine function but returned an awaitable; acall runs "
            "such functions in a worker thread. Pass an `async def` function instead.",
        )
    return rec._job_done(decision, pool, job, finished, now - start, now, time_limit, ignore)
