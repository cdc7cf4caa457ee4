"""The async driver: the same pipeline and decisions as ``_sync``, waiting with the event loop.

A coroutine runs on the caller's task under the concurrency limit and is cancelled at its
timeout by the dependency's deadline queue (the caller gets ``CallTimeoutError``, never a
``CancelledError``; a cancellation from elsewhere passes through uncounted). A sync function
given to ``Dependency.acall`` runs in the dependency's thread pool and the task awaits it without
blocking the loop, within the same timeout. Tagged calls (a FIT recipe is active) and hedged
calls choose a route per attempt (``_experiment``), as in ``_sync``. What an attempt's end means
(``Recorder._coroutine_returned`` / ``_coroutine_raised``) and what follows it
(``_flow.after``) are decided by the same code as for ``_sync``: this module only awaits.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..context import FIT
from ..errors import RejectedError
from ._async_pool import _admit, _in_pool, acquire, attempt_in_pool, take_token
from ._breaker import RUN
from ._bulkhead import give
from ._experiment import Plain, TaggedCall
from ._fallback import fallback_async
from ._flow import FALLBACK, REFUSED, RETRY, RETURN, after, recorder
from ._timeout import DONE, EXPIRED, attempt_timeout
from ._window import IGNORED, SUCCESS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..context import FaultContext
    from ._dependency import Dependency
    from ._experiment import Route
    from ._guard import Guard
    from ._record import Recorder

__all__ = ["attempt", "attempt_in_pool", "attempt_routed", "call", "call_in_pool", "run"]

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
    fit = _fit_get()
    if fit is not None:
        return await tagged(guard, fn, args, kwargs, fit, in_pool=False)
    if not guard.plain:
        one: Callable[..., Awaitable[tuple[int, Any]]] = attempt
        if guard.hedge is not None:
            from ._hedging import hedged_async

            one = hedged_async(guard, Plain(dep), in_pool=False)
        return await run(guard, fn, args, kwargs, guard.start(), None, one)
    try:
        if dep.lane:  # the breaker's decision is RUN, nothing to release: straight to the runner
            outcome, value = await _run(
                dep, RUN, fn, args, kwargs, guard.ignore, dep.policy.timeout, None
            )
        else:
            outcome, value = await attempt(
                dep, fn, args, kwargs, guard.ignore, dep.policy.timeout, None
            )
    except RejectedError as exc:
        first = (REFUSED, exc)
    else:
        if outcome == SUCCESS and guard.fast_ok:
            return value  # what ``after`` decides for it, without entering the loop
        first = (outcome, value)
    return await run(guard, fn, args, kwargs, None, first)


async def call_in_pool(
    guard: Guard, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run the sync ``fn`` in the dependency's thread pool, awaiting it off the loop thread."""
    dep = guard.dependency
    fit = _fit_get()
    if fit is not None:
        return await tagged(guard, fn, args, kwargs, fit, in_pool=True)
    one: Callable[..., Awaitable[tuple[int, Any]]] = attempt_in_pool
    if guard.hedge is not None:
        from ._hedging import hedged_async

        one = hedged_async(guard, Plain(dep), in_pool=True)
    return await run(guard, fn, args, kwargs, guard.start(), None, one)


async def tagged(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    fit: FaultContext,
    *,
    in_pool: bool,
) -> Any:
    """A call under a FIT recipe: every attempt routed into the experiment (``_shadow``)."""
    dep = guard.dependency
    tc = TaggedCall(dep, fit)
    one: Callable[..., Awaitable[tuple[int, Any]]]
    if guard.hedge is not None:
        from ._hedging import hedged_async

        one = hedged_async(guard, tc, in_pool=in_pool)
    else:

        async def one(
            dep: Dependency,
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            ignore: tuple[type[BaseException], ...],
            time_limit: float,
            deadline_at: float | None,
        ) -> tuple[int, Any]:
            room = dep._capacity(in_pool)
            route = tc.route(fn, time_limit, room, is_async=not in_pool)
            try:
                return await attempt_routed(
                    dep, route, args, kwargs, ignore, time_limit, deadline_at, in_pool=in_pool
                )
            finally:
                tc.decided(route.rec, route.label)

    try:
        return await run(guard, fn, args, kwargs, tc.start(guard), None, one, tc)
    finally:
        tc.finish()


async def run(
    guard: Guard,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline_at: float | None,
    first: tuple[int, Any] | None,
    one: Callable[..., Awaitable[tuple[int, Any]]] | None = None,
    tc: TaggedCall | None = None,
) -> Any:
    """The loop over attempts, then the fallback (``_sync.run``'s counterpart)."""
    dep = guard.dependency
    retrier = None
    one = one or attempt
    value: Any
    step, value = RETRY, 0.0
    if first is not None:
        step, value, retrier = after(guard, tc, retrier, first[0], first[1], deadline_at)
    while step == RETRY:
        if value > 0:
            await dep._asleep(value)
        time_limit = attempt_timeout(dep.policy.timeout, deadline_at, dep._clock())
        try:
            outcome, value = await one(dep, fn, args, kwargs, guard.ignore, time_limit, deadline_at)
        except RejectedError as exc:
            outcome, value = REFUSED, exc
        if outcome == SUCCESS and guard.on_result is None:
            return value  # ``after``'s first answer, without the call: most attempts' case
        step, value, retrier = after(guard, tc, retrier, outcome, value, deadline_at)
    if step == RETURN:
        return value
    if step == FALLBACK:
        return await fallback_async(recorder(dep, tc), guard.fallback, value, args, kwargs)
    raise value


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
    return await _run(dep, decision, fn, args, kwargs, ignore, time_limit, deadline_at)


async def attempt_routed(
    dep: Dependency,
    route: Route,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    time_limit: float,
    deadline_at: float | None,
    *,
    in_pool: bool,
) -> tuple[int, Any]:
    """One attempt on a route chosen already (``_sync.attempt_routed``'s counterpart)."""
    rec = route.rec
    clock = dep._clock
    try:
        await take_token(dep, rec, deadline_at)
    except BaseException as exc:
        route.not_admitted(exc)
        raise
    start = clock()
    try:
        if in_pool:
            outcome, value = await _in_pool(
                dep, route.decision, route.fn, args, kwargs, ignore, time_limit,
                deadline_at, rec, route.sample, route.close,
            )  # fmt: skip
        else:
            outcome, value = await _run(
                dep, route.decision, route.fn, args, kwargs, ignore, time_limit,
                deadline_at, rec, route.sample,
            )  # fmt: skip
    except BaseException as exc:  # refused, or cancelled (a hedge that lost, or the caller's)
        route.stopped(exc, in_pool)
        raise
    now = clock()
    route.ended(outcome, value, now - start, now, in_pool)
    return outcome, value


async def _run(
    dep: Dependency,
    decision: int,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    ignore: tuple[type[BaseException], ...],
    time_limit: float,
    deadline_at: float | None,
    rec: Recorder | None = None,
    sample: bool = True,
) -> tuple[int, Any]:
    """Limit -> run within ``time_limit`` -> record (by ``rec``, default the dependency).

    ``sample``: the limit learns from the attempt's latency (not when a FIT fault made it)."""
    if rec is None:
        rec = dep
    breaker = rec.breaker
    clock = dep._clock
    limit = dep._limiter
    if limit.wait > 0:
        await acquire(limit, rec, decision, clock, deadline_at)
    elif not limit.try_acquire():  # (``acquire``, inlined: most calls' limit never waits)
        raise rec._reject(limit, 0.0, decision)
    loop = asyncio.get_running_loop()
    dl = dep._dl if dep._dl_loop is loop else dep._deadlines_for(loop)
    task = asyncio.current_task()
    entry = dl.add(task, time_limit)  # type: ignore[union-attr]
    start = clock()
    try:
        result = await fn(*args, **kwargs)
    except (Exception, asyncio.CancelledError) as exc:
        error = exc
    except BaseException:
        entry[2] = DONE
        give(limit, sample, clock() - start, False)
        breaker.release(decision)
        raise
    else:
        now = clock()
        give(limit, sample, now - start, entry[2] == EXPIRED)  # expired: a timeout
        return rec._coroutine_returned(decision, entry, task, result, now - start, now, time_limit)
    now = clock()
    judged = rec._coroutine_raised(
        decision, entry, task, error, now - start, now, time_limit, ignore
    )
    if judged is None:  # cancelled by someone else: not the dependency's fault
        give(limit, sample, now - start, False)
        breaker.release(decision)
        raise error
    give(limit, sample, now - start, judged[0] != IGNORED)
    return judged
