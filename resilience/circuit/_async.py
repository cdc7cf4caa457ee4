"""The async driver: the same pipeline and decisions as ``_sync``, waiting with the event loop.

A coroutine runs on the caller's task under the concurrency limit and is cancelled at its
timeout by the dependency's deadline queue (the caller gets ``CallTimeoutError``, never a
``CancelledError``; a cancellation from elsewhere passes through uncounted). A sync function
given to ``Dependency.acall`` runs in the dependency's thread pool and the task awaits it without
blocking the loop, within the same timeout.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from ..context import FIT
from ..errors import ConfigError, RejectedError
from ._breaker import REJECT, RUN, State
from ._fallback import fallback_async, thrown
from ._fit import inject_async, inject_sync
from ._throttle import next_wait
from ._timeout import DONE, EXPIRED, LIVE, attempt_timeout
from ._window import _FOLD_AT, IGNORED, SUCCESS, TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._dependency import Dependency
    from ._guard import Guard

__all__ = ["call", "call_in_pool", "fast", "run"]

_CLOSED = State.CLOSED
_fit_get = FIT.get


async def call(
    guard: Guard,
    fn: Callable[..., Awaitable[Any]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Await ``fn(*args, **kwargs)`` through ``guard``; the signature is wrapt's."""
    dep = guard.dependency
    if dep._probation > 0:
        dep._first_calls()
    if _fit_get() is not None:
        fn = inject_async(dep.name, fn, dep.policy.timeout)
    if not guard.plain:
        return await run(guard, fn, args, kwargs, guard.start(), None, attempt)
    try:
        outcome, value = await attempt(
            dep, fn, args, kwargs, guard.ignore, dep.policy.timeout, None
        )
    except RejectedError as exc:
        refused = exc
    else:
        if outcome == SUCCESS and guard.fast_ok:
            return value
        return await run(guard, fn, args, kwargs, None, (outcome, value), attempt)
    return await fallback_async(dep, guard.fallback, refused, args, kwargs)


async def call_in_pool(
    guard: Guard, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run the sync ``fn`` in the dependency's thread pool, awaiting it off the loop thread."""
    dep = guard.dependency
    fn = inject_sync(dep.name, fn, dep.policy.timeout)
    return await run(guard, fn, args, kwargs, guard.start(), None, attempt_in_pool)


async def run(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_at: float | None,
    first: tuple[int, Any] | None,
    one: Callable[..., Awaitable[tuple[int, Any]]] | None = None,
) -> Any:
    """The loop over attempts, then the fallback (``_sync.run``'s counterpart)."""
    dep = guard.dependency
    clock = dep._clock
    one = one or attempt
    retrier = None
    pending = first
    while True:
        if pending is None:
            time_limit = attempt_timeout(dep.policy.timeout, deadline_at, clock())
            refused: RejectedError | None = None
            try:
                outcome, value = await one(
                    dep, fn, args, kwargs, guard.ignore, time_limit, deadline_at
                )
            except RejectedError as exc:
                refused = exc
            if refused is not None:
                return await fallback_async(dep, guard.fallback, refused, args, kwargs)
        else:
            outcome, value = pending
            pending = None
        if outcome == IGNORED:
            raise thrown(dep, value)
        if retrier is None:
            retrier = guard.retrier()
        if outcome == SUCCESS:
            if retrier is None or not retrier.wants(value):
                return value
            wait = retrier.after_result(value, clock(), deadline_at)
            if wait is None:
                dep._retries_stopped(retrier)
                return value
        else:
            wait = None if retrier is None else retrier.after_error(value, clock(), deadline_at)
            if wait is None:
                dep._retries_stopped(retrier)
                return await fallback_async(dep, guard.fallback, value, args, kwargs)
        dep._retrying(outcome)
        if wait > 0:
            await dep._asleep(wait)


async def _admit(dep: Dependency, deadline_at: float | None) -> int:
    """Breaker -> rate limit; returns the breaker's decision (refusals raise)."""
    clock = dep._clock
    breaker = dep.breaker
    decision = RUN
    if breaker.state is not _CLOSED:
        decision = breaker.acquire(clock())
        if decision == REJECT:
            raise dep._short_circuit(clock())
    bucket = dep._rate_limiter
    if bucket is None:
        return decision
    waited = 0.0
    try:
        while True:
            now = clock()
            delay = bucket.try_take(now)
            if delay <= 0.0:
                return decision
            sleep = next_wait(delay, waited, bucket.wait, deadline_at, now)
            if sleep is None:
                raise dep._rate_limited(delay)
            await dep._asleep(sleep)
            waited += sleep
    except BaseException:
        breaker.release(decision)
        raise


async def attempt(
    dep: Dependency,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    time_limit: float,
    deadline_at: float | None,
) -> tuple[int, Any]:
    """One pass for a coroutine: breaker -> rate limit -> limit -> run within ``time_limit``."""
    decision = RUN if dep.lane else await _admit(dep, deadline_at)
    breaker = dep.breaker
    clock = dep._clock
    limit = dep._limiter
    try:
        if limit.wait > 0:
            admitted = await limit.acquire_async(attempt_timeout(limit.wait, deadline_at, clock()))
        else:
            admitted = limit.try_acquire()
        if not admitted:
            raise dep._reject(decision, limit.limit)
    except BaseException:
        breaker.release(decision)
        raise
    loop = asyncio.get_running_loop()
    dl = dep._dl if dep._dl_loop is loop else dep._deadlines_for(loop)
    task = asyncio.current_task()
    entry = dl.add(task, time_limit)  # type: ignore[union-attr]
    start = clock()
    try:
        result = await fn(*args, **kwargs)
    except asyncio.CancelledError:
        now = clock()
        if entry[2] != EXPIRED:  # cancelled by someone else: not the dependency's fault
            entry[2] = DONE
            limit.release(now - start, False)
            breaker.release(decision)
            raise
        limit.release(now - start, True)
        if task is not None:
            task.uncancel()
        return TIMEOUT, dep._timeout(decision, now - start, now, time_limit)
    except Exception as exc:
        error = exc
    except BaseException:
        entry[2] = DONE
        limit.release(clock() - start, False)
        breaker.release(decision)
        raise
    else:
        now = clock()
        if entry[2] == EXPIRED:  # the function swallowed our cancellation and returned
            if task is not None:
                task.uncancel()
            limit.release(now - start, True)
            return TIMEOUT, dep._timeout(decision, now - start, now, time_limit)
        entry[2] = DONE
        limit.release(now - start, False)
        dep._success(decision, now - start, now)
        return SUCCESS, result
    entry[2] = DONE
    now = clock()
    judged = dep._failed(decision, error, now - start, now, ignore)
    limit.release(now - start, judged[0] != IGNORED)
    return judged


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
    breaker = dep.breaker
    pool = dep._pool or dep._thread_pool()
    permits = pool.permits
    if not permits.try_acquire():
        breaker.release(decision)
        raise dep._reject(decision, permits.limit)
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[bool] = loop.create_future()
    clock = dep._clock
    start = clock()
    job = None
    try:
        job = pool.submit(fn, args, kwargs, lambda: _wake_from(loop, woken))
        timer = loop.call_later(time_limit, _wake, woken, False)
        try:
            finished = await woken  # True: the job is done; False: the time limit came first
        finally:
            timer.cancel()
    except BaseException:  # cancelled while waiting: the worker finishes on its own
        if job is None:
            permits.release(0.0, False)
        else:
            pool.abandon(job)
        breaker.release(decision)
        raise
    now = clock()
    latency = now - start
    if not finished:
        pool.abandon(job)
        return TIMEOUT, dep._timeout(decision, latency, now, time_limit)
    error = job.error
    if error is None:
        result = job.result
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            breaker.release(decision)
            raise ConfigError(
                "fn",
                f"{fn!r} is not a coroutine function but returned an awaitable; acall runs "
                "such functions in a worker thread. Pass an `async def` function instead.",
            )
        dep._success(decision, latency, now)
        return SUCCESS, result
    if isinstance(error, Exception):
        return dep._failed(decision, error, latency, now, ignore)
    breaker.release(decision)
    raise error


def fast(guard: Guard, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The coroutine-function counterpart of ``_sync.fast``: one coroutine frame on the
    closed-circuit success path; everything else goes to ``call``'s pipeline."""
    dep = guard.dependency
    general = guard.acall
    if not guard.fast_ok:

        async def protected_general(*args: Any, **kwargs: Any) -> Any:
            return await general(fn, None, args, kwargs)

        return protected_general

    window = dep.window
    permits = dep.permits
    free = permits._free
    fit_get = FIT.get
    get_loop = asyncio.get_running_loop
    current_task = asyncio.current_task

    async def protected(*args: Any, **kwargs: Any) -> Any:
        if not dep.lane or fit_get() is not None:
            return await general(fn, None, args, kwargs)
        try:
            free.pop()
        except IndexError:
            return await general(fn, None, args, kwargs)
        if len(free) < permits.low:
            permits.low = len(free)
        loop = get_loop()
        dl = dep._dl if dep._dl_loop is loop else dep._deadlines_for(loop)
        task = current_task()
        entry = dl.add(task, dep.policy.timeout)  # type: ignore[union-attr]
        clock = dep._clock
        start = clock()
        try:
            result = await fn(*args, **kwargs)
        except (Exception, asyncio.CancelledError) as exc:
            error = exc
        except BaseException:
            entry[2] = DONE
            permits.give()
            raise
        else:
            if permits._debt:
                permits.give()
            else:
                free.append(0)
            now = clock()
            latency = now - start
            if entry[2] == LIVE and latency < window.slow_call:
                entry[2] = DONE
                ok = window._ok
                if now < window._edge and len(ok) < _FOLD_AT:
                    ok.append(latency)
                else:
                    window.add_success(latency, now)
                return result
            return await _late(guard, fn, args, kwargs, result, entry, task, latency, now)
        return await _failed(guard, fn, args, kwargs, error, entry, task, start)

    return protected


async def _failed(
    guard: Guard,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: BaseException,
    entry: list[Any],
    task: asyncio.Task[Any] | None,
    start: float,
) -> Any:
    dep = guard.dependency
    dep.permits.give()
    now = dep._clock()
    first: tuple[int, Any]
    if isinstance(error, asyncio.CancelledError):
        if entry[2] != EXPIRED:  # cancelled by someone else: not the dependency's fault
            entry[2] = DONE
            raise error
        if task is not None:
            task.uncancel()
        first = (TIMEOUT, dep._timeout(RUN, now - start, now, dep.policy.timeout))
    else:
        entry[2] = DONE
        assert isinstance(error, Exception)
        first = dep._failed(RUN, error, now - start, now, guard.ignore)
    return await run(guard, fn, args, kwargs, None, first)


async def _late(
    guard: Guard,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    entry: list[Any],
    task: asyncio.Task[Any] | None,
    latency: float,
    now: float,
) -> Any:
    dep = guard.dependency
    if entry[2] == EXPIRED:  # the function swallowed our cancellation and returned
        if task is not None:
            task.uncancel()
        first = (TIMEOUT, dep._timeout(RUN, latency, now, dep.policy.timeout))
        return await run(guard, fn, args, kwargs, None, first)
    entry[2] = DONE
    dep._success(RUN, latency, now)
    return result
