"""The decorator's fast paths: the closed-circuit success path inlined, one frame, no lock.

``fast_sync`` and ``fast_async`` build the closure ``protect`` returns for a plain function. While
the dependency is on its ``lane`` (closed circuit, fixed bulkhead, no rate limit, past its first
calls) and no FIT recipe is active (one contextvar read), a call takes a permit from the lock-free
permit list, runs, and appends its latency to the window's pending list. Anything else (a
failure, a slow or late call, a full bulkhead, another state) goes to the same pipeline as
``Guard.call`` / ``Guard.acall`` (``_sync`` / ``_async``), with this attempt's outcome.

What is specialised here, and why it may be: a call costs about half a microsecond, and every
frame or local more is a few percent of it, so the success path is spelled out rather than
calling the shared steps. It decides nothing of its own:

- whether a call may take the lane is ``Dependency._refresh``'s (``lane``, ``rated``,
  ``fast_limit``), read as attributes;
- a success below ``fast_limit`` (neither slow nor late: see ``_refresh``) is what
  ``Recorder._success`` records for it, inlined (``RollingWindow.add_success``'s pending list);
- every other end is judged by the shared verdicts (``Recorder._returned``,
  ``_coroutine_returned``, ``_coroutine_raised``, ``_failed``, ``_reject``) and continues in the
  drivers' loop (``_sync.run`` / ``_async.run``, so ``_flow.after`` decides retries and the
  fallback).

The sync and async closures mirror each other because one calls and the other awaits; each
``off_lane`` repeats its lane's body because sharing it would cost the lane a local (2%).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..context import FIT
from . import _async, _sync
from ._breaker import RUN
from ._flow import REFUSED
from ._timeout import DONE, LIVE
from ._window import _FOLD_AT, SUCCESS

if TYPE_CHECKING:
    from ._guard import Guard

__all__ = ["fast_async", "fast_sync"]


def fast_sync(guard: Guard, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A closure running ``fn`` through ``guard``, for the decorator.

    The closed-circuit success path of semaphore isolation with nothing else to do (no FIT
    recipe, fixed bulkhead, no rate limit, past the first calls: ``dependency.lane``) is
    inlined here: one frame, no lock (permits and success latencies are lock-free lists).
    With a rate limit (``dependency.rated``) a token at hand goes straight to the limit step
    (``off_lane``). Every other case goes to the same pipeline as ``call``, with this
    attempt's outcome.
    """
    dep = guard.dependency
    general = guard.call
    if dep.policy.isolation != "semaphore" or not guard.fast_ok:

        def protected_general(*args: Any, **kwargs: Any) -> Any:
            return general(fn, None, args, kwargs)

        return protected_general

    window = dep.window
    permits = dep.permits
    free = permits._free
    fit_get = FIT.get

    def off_lane(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The same closed circuit with a rate limit: a token at hand, then one attempt from the
        # limit on. Anything else (no token yet, a recipe, another state): the general path.
        bucket = dep.rated
        if bucket is None or bucket.try_take(dep._clock()) > 0.0:
            return general(fn, None, args, kwargs)
        try:
            free.pop()
        except IndexError:  # the general path refuses it (the token is spent, as there)
            return _sync.run(guard, fn, args, kwargs, None, (REFUSED, dep._reject(permits)))
        # The lane's body below, once more: one more local there costs 2% of every call.
        if len(free) < permits.low:
            permits.low = len(free)
        clock = dep._clock
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            error = exc
        except BaseException:
            permits.give()
            raise
        else:
            permits.give()
            now = clock()
            latency = now - start
            if latency < dep.fast_limit:
                window.add_success(latency, now)
                return result
            return _late_sync(guard, fn, args, kwargs, result, latency, now)
        permits.give()
        now = clock()
        first = dep._failed(RUN, error, now - start, now, guard.ignore)
        return _sync.run(guard, fn, args, kwargs, None, first)

    def protected(*args: Any, **kwargs: Any) -> Any:
        if not dep.lane or fit_get() is not None:
            if dep.rated is None or fit_get() is not None:  # (a warning's stacklevel: 2 frames)
                return general(fn, None, args, kwargs)
            return off_lane(args, kwargs)
        try:
            free.pop()
        except IndexError:
            return general(fn, None, args, kwargs)
        if len(free) < permits.low:  # peak concurrency, for the stream
            permits.low = len(free)
        clock = dep._clock
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            error = exc
        except BaseException:
            permits.give()
            raise
        else:
            if permits._debt:
                permits.give()
            else:
                free.append(0)
            now = clock()
            latency = now - start
            if latency < dep.fast_limit:
                # RollingWindow.add_success, inlined: this is most calls' only bookkeeping.
                ok = window._ok
                if now < window._edge and len(ok) < _FOLD_AT:
                    ok.append(latency)
                else:
                    window.add_success(latency, now)
                return result
            return _late_sync(guard, fn, args, kwargs, result, latency, now)
        permits.give()
        now = clock()
        first = dep._failed(RUN, error, now - start, now, guard.ignore)
        return _sync.run(guard, fn, args, kwargs, None, first)

    return protected


def _late_sync(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    result: Any,
    latency: float,
    now: float,
) -> Any:
    # A fast-path call that took long enough to matter: maybe slow (recorded as slow), past
    # its timeout, or holding up an event loop running on this thread.
    dep = guard.dependency
    if _sync._running_loop() is not None:
        dep._warn_on_loop(fn)
    first = dep._returned(RUN, result, latency, now, dep.policy.timeout)
    if first[0] == SUCCESS:
        return result
    return _sync.run(guard, fn, args, kwargs, None, first)


def fast_async(guard: Guard, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The coroutine-function counterpart of ``fast_sync``: one coroutine frame on the
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

    async def off_lane(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bucket = dep.rated  # see fast_sync
        if bucket is None or bucket.try_take(dep._clock()) > 0.0:
            return await general(fn, None, args, kwargs)
        try:
            free.pop()
        except IndexError:  # the general path refuses it (the token is spent, as there)
            first = (REFUSED, dep._reject(permits))
            return await _async.run(guard, fn, args, kwargs, None, first)
        # The lane's body below, once more: one more local there costs 2% of every call.
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
            permits.give()
            now = clock()
            latency = now - start
            if entry[2] == LIVE and latency < window.slow_call:
                entry[2] = DONE
                window.add_success(latency, now)
                return result
            return await _late_async(guard, fn, args, kwargs, result, entry, task, latency, now)
        return await _failed_async(guard, fn, args, kwargs, error, entry, task, start)

    async def protected(*args: Any, **kwargs: Any) -> Any:
        if not dep.lane or fit_get() is not None:
            if dep.rated is None or fit_get() is not None:
                return await general(fn, None, args, kwargs)
            return await off_lane(args, kwargs)
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
            return await _late_async(guard, fn, args, kwargs, result, entry, task, latency, now)
        return await _failed_async(guard, fn, args, kwargs, error, entry, task, start)

    return protected


async def _failed_async(
    guard: Guard,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: Exception | asyncio.CancelledError,
    entry: list[Any],
    task: asyncio.Task[Any] | None,
    start: float,
) -> Any:
    dep = guard.dependency
    dep.permits.give()
    now = dep._clock()
    latency = now - start
    first = dep._coroutine_raised(
        RUN, entry, task, error, latency, now, dep.policy.timeout, guard.ignore
    )
    if first is None:  # cancelled by someone else: not the dependency's fault
        raise error
    return await _async.run(guard, fn, args, kwargs, None, first)


async def _late_async(
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
    first = dep._coroutine_returned(RUN, entry, task, result, latency, now, dep.policy.timeout)
    if first[0] == SUCCESS:
        return result
    return await _async.run(guard, fn, args, kwargs, None, first)
