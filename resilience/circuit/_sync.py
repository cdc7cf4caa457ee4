"""The sync driver: one call through the pipeline, waiting with threads and sleeps.

FIT -> breaker -> rate limit -> concurrency limit -> timeout -> run -> record -> retry ->
fallback. The steps decide (``_experiment``, ``Recorder._acquire``, ``_throttle.take``,
``_bulkhead``, ``_timeout``, the ``Recorder`` verdicts, ``_flow.after``, ``_fallback``); this
module only calls, waits and sleeps, as ``_async`` does on the event loop. ``attempt`` is one
pass from the breaker to the record and answers ``(outcome, value)``; a refusal (open circuit,
full bulkhead, no token) raises, is never retried and goes to the fallback. The runners
(``_on_caller_thread``, ``_in_pool``) free the attempt's trial slot on every way out that is not
judged. ``run`` is the loop over attempts. ``attempt_routed`` is one pass on a route chosen per
attempt (``_experiment``): a tagged call's (``tagged``) or a hedged call's (``_hedging``). The
decorator's closure is in ``_fast``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..context import FIT
from ..errors import RejectedError
from ._breaker import RUN, State
from ._bulkhead import give
from ._experiment import Plain, TaggedCall
from ._fallback import fallback_sync
from ._flow import FALLBACK, REFUSED, RETRY, RETURN, Attempt, after, recorder
from ._throttle import take
from ._timeout import attempt_timeout
from ._window import IGNORED, SUCCESS

if TYPE_CHECKING:
    from ..context import FaultContext
    from ._bulkhead import ConcurrencyLimit
    from ._dependency import Dependency
    from ._experiment import Route
    from ._guard import Guard
    from ._record import Recorder

__all__ = [
    "acquire",
    "attempt",
    "attempt_routed",
    "call",
    "run",
    "tagged",
    "take_token",
]

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
    fit = _fit_get()
    if fit is not None:
        return tagged(guard, fn, args, kwargs, fit)
    if not guard.plain:
        if guard.hedge is not None:
            from ._hedging import hedged_sync

            one = hedged_sync(guard, Plain(dep))
            return run(guard, fn, args, kwargs, guard.start(), None, one)
        return run(guard, fn, args, kwargs, guard.start())
    # The first attempt of a call with no deadline and no budget, kept short: for thread
    # isolation this is every call's path. With ``lane`` (closed circuit, no rate limit) the
    # breaker's decision is RUN and has nothing to release: straight to the runner.
    try:
        if dep.lane:
            runner = _in_pool if dep.policy.isolation == "thread" else _on_caller_thread
            outcome, value = runner(
                dep, RUN, fn, args, kwargs, guard.ignore, dep.policy.timeout, None
            )
        else:
            outcome, value = attempt(dep, fn, args, kwargs, guard.ignore, dep.policy.timeout, None)
    except RejectedError as exc:
        first = (REFUSED, exc)  # to the fallback outside this handler: no implicit context
    else:
        if outcome == SUCCESS and guard.fast_ok:
            return value  # what ``after`` decides for it, without entering the loop
        first = (outcome, value)
    return run(guard, fn, args, kwargs, None, first)


def tagged(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    fit: FaultContext,
) -> Any:
    """A call under a FIT recipe: every attempt routed into the experiment (``_shadow``)."""
    dep = guard.dependency
    tc = TaggedCall(dep, fit)
    one: Attempt
    if guard.hedge is not None:
        from ._hedging import hedged_sync

        one = hedged_sync(guard, tc)
    else:

        def one(
            dep: Dependency,
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            ignore: tuple[type[BaseException], ...],
            timeout: float,
            deadline_at: float | None,
        ) -> tuple[int, Any]:
            route = tc.route(fn, timeout, dep._capacity(dep.policy.isolation == "thread"))
            try:
                return attempt_routed(dep, route, args, kwargs, ignore, timeout, deadline_at)
            finally:
                tc.decided(route.rec, route.label)

    try:
        return run(guard, fn, args, kwargs, tc.start(guard), None, one, tc)
    finally:
        tc.finish()


def run(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_at: float | None,
    first: tuple[int, Any] | None = None,
    one: Attempt | None = None,
    tc: TaggedCall | None = None,
) -> Any:
    """Attempts until the flow (``_flow``) says to return, raise or fall back.

    ``first`` is the outcome of an attempt already made (by the fast path); ``one`` makes an
    attempt (default :func:`attempt`); ``tc``: the call is tagged, its attempts were recorded
    where ``tc.rec`` says, and so go its retries and fallback."""
    dep = guard.dependency
    retrier = None
    if one is None:
        one = attempt
    value: Any
    step, value = RETRY, 0.0
    if first is not None:
        step, value, retrier = after(guard, tc, retrier, first[0], first[1], deadline_at)
    while step == RETRY:
        if value > 0:
            dep._sleep(value)
        timeout = attempt_timeout(dep.policy.timeout, deadline_at, dep._clock())
        try:
            outcome, value = one(dep, fn, args, kwargs, guard.ignore, timeout, deadline_at)
        except RejectedError as exc:
            outcome, value = REFUSED, exc  # to the fallback outside this handler: no context
        if outcome == SUCCESS and guard.on_result is None:
            return value  # ``after``'s first answer, without the call: most attempts' case
        step, value, retrier = after(guard, tc, retrier, outcome, value, deadline_at)
    if step == RETURN:
        return value
    if step == FALLBACK:
        return fallback_sync(recorder(dep, tc), guard.fallback, value, args, kwargs)
    raise value


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
    if dep.policy.isolation == "thread":
        return _in_pool(dep, decision, fn, args, kwargs, ignore, timeout, deadline_at)
    return _on_caller_thread(dep, decision, fn, args, kwargs, ignore, timeout, deadline_at)


def _admit(dep: Dependency, deadline_at: float | None) -> int:
    """The breaker and rate-limit steps: the breaker's decision, or a refusal raised."""
    breaker = dep.breaker
    decision = RUN if breaker.state is _CLOSED else dep._acquire()
    if dep._rate_limiter is not None:
        try:
            take_token(dep, dep, deadline_at)
        except BaseException:
            breaker.release(decision)
            raise
    return decision


def take_token(dep: Dependency, rec: Recorder, deadline_at: float | None) -> None:
    """The rate-limit step: a token now, or after a booked wait (slept here); else
    ``RateLimitedError`` (recorded by ``rec``)."""
    bucket = dep._rate_limiter
    if bucket is None:
        return
    seconds = take(bucket, rec, dep._clock(), deadline_at)
    if seconds > 0.0:
        try:
            dep._sleep(seconds)
        except BaseException:  # interrupted: the booked token goes to the next caller
            bucket.refund(dep._clock())
            raise


def attempt_routed(
    dep: Dependency,
    route: Route,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    timeout: float,
    deadline_at: float | None,
) -> tuple[int, Any]:
    """One attempt on a route chosen already (its breakers passed): rate limit -> limit ->
    run -> recorded by the route's recorder (and mirrored into a shadow)."""
    rec = route.rec
    clock = dep._clock
    try:
        take_token(dep, rec, deadline_at)
    except BaseException as exc:
        route.not_admitted(exc)
        raise
    pooled = dep.policy.isolation == "thread"
    start = clock()
    try:
        if pooled:
            outcome, value = _in_pool(
                dep, route.decision, route.fn, args, kwargs, ignore, timeout,
                deadline_at, rec, route.sample, route.close,
            )  # fmt: skip
        else:
            outcome, value = _on_caller_thread(
                dep, route.decision, route.fn, args, kwargs, ignore, timeout,
                deadline_at, rec, route.sample,
            )  # fmt: skip
    except BaseException as exc:
        route.stopped(exc, pooled)
        raise
    now = clock()
    route.ended(outcome, value, now - start, now, pooled)
    return outcome, value


def acquire(
    limit: ConcurrencyLimit,
    rec: Recorder,
    decision: int,
    clock: Callable[[], float],
    deadline_at: float | None,
    may_wait: bool = True,
) -> None:
    """The concurrency-limit step on a thread: a permit at once, or within the limit's wait
    (an adaptive limit's, cut to the call's deadline); else the refusal raised, recorded. A
    call refused or interrupted here never ran: its trial slot (``decision``) is freed."""
    if not (may_wait and limit.wait > 0):
        if not limit.try_acquire():
            raise rec._reject(limit, 0.0, decision)
        return
    before = clock()
    try:
        admitted = limit.acquire(attempt_timeout(limit.wait, deadline_at, before))
    except BaseException:
        rec.breaker.release(decision)
        raise
    if not admitted:
        raise rec._reject(limit, clock() - before, decision)


def _on_caller_thread(
    dep: Dependency,
    decision: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    timeout: float,
    deadline_at: float | None,
    rec: Recorder | None = None,
    sample: bool = True,
) -> tuple[int, Any]:
    if rec is None:
        rec = dep
    clock = dep._clock
    limit = dep._limiter
    if limit.wait > 0:
        acquire(limit, rec, decision, clock, deadline_at)
    elif not limit.try_acquire():  # (``acquire``, inlined: most calls' limit never waits)
        raise rec._reject(limit, 0.0, decision)
    start = clock()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        error = exc
    except BaseException:
        give(limit, sample, clock() - start, False)
        rec.breaker.release(decision)
        raise
    else:
        now = clock()
        latency = now - start
        # ``give``, inlined on the success path (a frame here is 3% of a call); a call that
        # returned after its timeout is a timeout (``_returned``), so the limit sees a drop.
        if sample:
            limit.release(latency, latency > timeout)
        else:
            limit.give_back()
        return rec._returned(decision, result, latency, now, timeout)
    now = clock()
    judged = rec._failed(decision, error, now - start, now, ignore)
    give(limit, sample, now - start, judged[0] != IGNORED)
    return judged


def _in_pool(
    dep: Dependency,
    decision: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    timeout: float,
    deadline_at: float | None = None,
    rec: Recorder | None = None,
    sample: bool = True,
    done: Callable[[], None] | None = None,
) -> tuple[int, Any]:
    # ``done``: called once the worker is through with the job (or at once if none was made).
    if rec is None:
        rec = dep
    pool = dep._pool or dep._thread_pool()
    permits = pool.permits
    clock = dep._clock
    if permits.wait > 0:  # an adaptive limit that lets calls wait for a permit
        acquire(permits, rec, decision, clock, deadline_at)
    elif not permits.try_acquire():  # (``acquire``, inlined: for thread isolation, every call)
        raise rec._reject(permits, 0.0, decision)
    start = clock()
    job = None
    try:
        job = pool.submit(fn, args, kwargs, done, permits, not sample)
        finished = job.done.acquire(timeout=timeout)
    except BaseException:  # e.g. Ctrl-C while waiting: the worker finishes on its own
        pool.give_up(job, permits, done)
        rec.breaker.release(decision)
        raise
    now = clock()
    return rec._job_done(decision, pool, job, finished, now - start, now, timeout, ignore)
