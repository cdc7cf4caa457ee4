"""The sync driver: one call through the pipeline, waiting with threads and sleeps.

FIT -> breaker -> rate limit -> concurrency limit -> timeout -> run -> record -> retry ->
fallback. The steps decide (``_fit``, ``Breaker``, ``_throttle``, ``_bulkhead``, ``_timeout``,
``Retrier``, ``_fallback``); this module only calls, waits and sleeps. ``attempt`` is one pass
from the breaker to the record and answers ``(outcome, value)``; a refusal (open circuit, full
bulkhead, no token) raises, is never retried and goes to the fallback. ``run`` is the loop over
attempts. ``fast`` builds the decorator's closure: the closed-circuit success path of semaphore
isolation inlined (one frame, no lock), everything else handed to ``call``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..context import FIT
from ..errors import RejectedError
from ._breaker import REJECT, RUN, State
from ._fallback import fallback_sync, thrown
from ._fit import inject_sync
from ._throttle import next_wait
from ._timeout import attempt_timeout
from ._window import _FOLD_AT, IGNORED, SUCCESS, TIMEOUT

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._dependency import Dependency
    from ._guard import Guard

__all__ = ["attempt", "call", "fast", "run"]

_CLOSED = State.CLOSED
_running_loop = asyncio._get_running_loop
_fit_get = FIT.get


def call(
    guard: Guard,
    fn: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run ``fn(*args, **kwargs)`` through ``guard``; the signature is wrapt's (the decorator)."""
    dep = guard.dependency
    if _running_loop() is not None:
        dep._warn_on_loop(fn)
    if dep._probation > 0:
        dep._first_calls()
    if _fit_get() is not None:
        fn = inject_sync(dep.name, fn, dep.policy.timeout)
    if not guard.plain:
        return run(guard, fn, args, kwargs, guard.start())
    # The first attempt of a call with no deadline and no budget, kept short: for thread
    # isolation this is every call's path. With ``lane`` (closed circuit, no rate limit) the
    # breaker's decision is RUN and has nothing to release: straight to the pool.
    try:
        if dep.lane and dep.policy.isolation == "thread":
            outcome, value = _in_pool(dep, RUN, fn, args, kwargs, guard.ignore, dep.policy.timeout)
        else:
            outcome, value = attempt(dep, fn, args, kwargs, guard.ignore, dep.policy.timeout, None)
    except RejectedError as exc:
        refused = exc
    else:
        if outcome == SUCCESS and guard.fast_ok:
            return value
        return run(guard, fn, args, kwargs, None, (outcome, value))
    return fallback_sync(dep, guard.fallback, refused, args, kwargs)


def run(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_at: float | None,
    first: tuple[int, Any] | None = None,
) -> Any:
    """Attempts until one succeeds or the retry step stops; then the fallback step.

    ``first`` is the outcome of an attempt already made (by the fast path)."""
    dep = guard.dependency
    clock = dep._clock
    retrier = None
    pending = first
    while True:
        if pending is None:
            timeout = attempt_timeout(dep.policy.timeout, deadline_at, clock())
            refused: RejectedError | None = None
            try:
                outcome, value = attempt(dep, fn, args, kwargs, guard.ignore, timeout, deadline_at)
            except RejectedError as exc:
                refused = exc
            if refused is not None:  # raised here, outside the handler: no implicit context
                return fallback_sync(dep, guard.fallback, refused, args, kwargs)
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
                return fallback_sync(dep, guard.fallback, value, args, kwargs)
        dep._retrying(outcome)
        if wait > 0:
            dep._sleep(wait)


def attempt(
    dep: Dependency,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    timeout: float,
    deadline_at: float | None,
) -> tuple[int, Any]:
    """One pass: breaker -> rate limit -> concurrency limit -> run within ``timeout`` -> record."""
    decision = RUN if dep.lane else _admit(dep, deadline_at)
    try:
        if dep.policy.isolation == "thread":
            return _in_pool(dep, decision, fn, args, kwargs, ignore, timeout)
        return _on_caller_thread(dep, decision, fn, args, kwargs, ignore, timeout, deadline_at)
    except BaseException:
        # Refused, or a BaseException passing through: the trial slot must not stay taken.
        # (Every outcome the breaker judges was recorded before returning.)
        dep.breaker.release(decision)
        raise


def _admit(dep: Dependency, deadline_at: float | None) -> int:
    """The breaker and rate-limit steps: the breaker's decision, or a refusal raised."""
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
            dep._sleep(sleep)
            waited += sleep
    except BaseException:
        breaker.release(decision)
        raise


def _on_caller_thread(
    dep: Dependency,
    decision: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    timeout: float,
    deadline_at: float | None,
) -> tuple[int, Any]:
    clock = dep._clock
    limit = dep._limiter
    if limit.wait > 0:
        admitted = limit.acquire(attempt_timeout(limit.wait, deadline_at, clock()))
    else:
        admitted = limit.try_acquire()
    if not admitted:
        raise dep._reject(decision, limit.limit)
    start = clock()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        error = exc
    except BaseException:
        limit.release(clock() - start, False)
        raise
    else:
        # Not preemptible: a call that returned after its timeout is judged a timeout.
        now = clock()
        latency = now - start
        late = latency > timeout
        limit.release(latency, late)
        if late:
            return TIMEOUT, dep._timeout(decision, latency, now, timeout)
        dep._success(decision, latency, now)
        return SUCCESS, result
    now = clock()
    judged = dep._failed(decision, error, now - start, now, ignore)
    limit.release(now - start, judged[0] != IGNORED)
    return judged


def _in_pool(
    dep: Dependency,
    decision: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    timeout: float,
) -> tuple[int, Any]:
    pool = dep._pool or dep._thread_pool()
    permits = pool.permits
    if not permits.try_acquire():
        raise dep._reject(decision, permits.limit)
    clock = dep._clock
    start = clock()
    job = None
    try:
        job = pool.submit(fn, args, kwargs)
        finished = job.done.acquire(timeout=timeout)
    except BaseException:  # e.g. Ctrl-C while waiting: the worker finishes on its own
        if job is None:
            permits.release(0.0, False)
        else:
            pool.abandon(job)
        raise
    now = clock()
    latency = now - start
    if not finished:
        pool.abandon(job)
        return TIMEOUT, dep._timeout(decision, latency, now, timeout)
    error = job.error
    if error is None:
        dep._success(decision, latency, now)
        return SUCCESS, job.result
    if isinstance(error, Exception):
        return dep._failed(decision, error, latency, now, ignore)
    raise error  # KeyboardInterrupt, SystemExit...: the caller's, as if called directly


def fast(guard: Guard, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A closure running ``fn`` through ``guard``, for the decorator.

    The closed-circuit success path of semaphore isolation with nothing else to do (no FIT
    recipe, fixed bulkhead, no rate limit, past the first calls: ``dependency.lane``) is
    inlined here: one frame, no lock (permits and success latencies are lock-free lists).
    Every other case goes to the same pipeline as ``call``, with this attempt's outcome.
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

    def protected(*args: Any, **kwargs: Any) -> Any:
        if not dep.lane or fit_get() is not None:
            return general(fn, None, args, kwargs)
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
            return _late(guard, fn, args, kwargs, result, latency, now)
        permits.give()
        now = clock()
        first = dep._failed(RUN, error, now - start, now, guard.ignore)
        return run(guard, fn, args, kwargs, None, first)

    return protected


def _late(
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
    if _running_loop() is not None:
        dep._warn_on_loop(fn)
    timeout = dep.policy.timeout
    if latency > timeout:
        return run(
            guard, fn, args, kwargs, None, (TIMEOUT, dep._timeout(RUN, latency, now, timeout))
        )
    dep._success(RUN, latency, now)
    return result
