"""The hedge step: one call's attempts raced through the pipeline (``_hedge`` decides).

``protect(key, hedge=Hedge(...))``. An attempt that has not finished after the delay (the
dependency's observed p95 by default, see ``Dependency.observed_p95``), or that failed, is raced
by another, up to ``max_attempts``, within the hedge budget; the first success wins. Each
attempt is a whole attempt of the pipeline: its own route (breaker, and under a FIT recipe the
experiment's admission and fault: ``_experiment``), rate limit, concurrency limit, timeout and
record. The caller's call is still counted once (``resilience_calls_total``): by the winning
attempt, or, when every attempt failed, by the first one, whose error the caller gets; the
other attempts stay in the rolling window (the breaker judges attempts) and are marked
superseded, as retried attempts are.

- Coroutine functions: ``run_hedged`` races tasks; losers are cancelled and awaited before the
  call returns, and a cancelled attempt records nothing.
- Sync functions under thread isolation: ``run_hedged_sync`` races pool jobs
  (``ThreadBulkhead`` is not an Executor: each job resolves a future when its worker is done,
  and the wait the race makes also ends attempts at their timeout). The caller's thread
  records every attempt it hears of; losers still running are abandoned, as a timed-out call's
  worker is, and record nothing.
- Sync functions under semaphore isolation run on the caller's thread, which can neither run two
  attempts at once nor walk away from the slow one: ``ConfigError``.

Extra attempts are not hedged after a refusal of the first (an open circuit, a full bulkhead) nor
after an ignored exception; ``resilience_hedges_total{outcome}`` counts ``sent``, ``won`` and
``budget_exhausted``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, RejectedError
from ._breaker import RUN
from ._experiment import Route, refusal_outcome
from ._hedge import run_hedged, run_hedged_sync
from ._timeout import attempt_timeout
from ._window import (
    IGNORED,
    OUTCOMES,
    RATE_LIMITED,
    REJECTED,
    SHORT_CIRCUITED,
    SUCCESS,
    TIMEOUT,
)

if TYPE_CHECKING:
    from ._dependency import Dependency
    from ._guard import Guard
    from ._hedge import HedgeThrottle
    from ._record import Recorder

__all__ = ["Router", "check_hedge", "hedged_async", "hedged_sync"]

_LIVE, _DONE, _TIMED_OUT, _ABANDONED = 0, 1, 2, 3
_REFUSALS = (SHORT_CIRCUITED, REJECTED, RATE_LIMITED)

# What each recorded attempt left: (outcome, value or error, recorder, fit label).
Results = dict[int, tuple[int, Any, "Recorder", str]]


class Router(Protocol):
    """Where attempts go: ``_experiment.Plain`` (the dependency) or a ``TaggedCall``."""

    rec: Recorder

    def route(
        self, fn: Callable[..., Any], timeout: float, capacity: int, is_async: bool = False
    ) -> Route: ...

    def throttle(self, guard: Guard) -> HedgeThrottle: ...

    def hedge_event(self, event: str) -> None: ...

    def decided(self, rec: Recorder, label: str) -> None: ...


def check_hedge(dep: Dependency, is_async: bool) -> None:
    """``ConfigError`` where hedging cannot work: a sync function under semaphore isolation."""
    if not is_async and dep.policy.isolation != "thread":
        raise ConfigError(
            "hedge",
            f"dependency {dep.name!r} runs sync functions on the caller's thread "
            "(isolation='semaphore'), which cannot run a second attempt while the first is "
            "still running, nor walk away from the slow one. Hedge a coroutine function, or "
            "use isolation='thread'.",
        )


class _Race:
    """One hedged call's book, kept for the async and the sync race alike: what each attempt
    left, whether more may be sent, and how the caller's call is counted once."""

    __slots__ = ("dep", "results", "router", "stop", "throttle")

    def __init__(self, dep: Dependency, router: Router, throttle: HedgeThrottle) -> None:
        self.dep = dep
        self.router = router
        self.throttle = throttle
        self.results: Results = {}
        self.stop = False  # no more hedges: the first attempt was refused, or an error ignored

    def delay(self) -> float:
        """Seconds before the next hedge is sent (the observed p95 by default)."""
        return self.throttle.delay(self.dep.observed_p95())

    def allow(self) -> bool:
        """May another attempt be sent now (and paid from the hedge budget)?"""
        return not self.stop and self.throttle.try_hedge(self.dep._clock())

    def on_event(self, event: str) -> None:
        if not (self.stop and event == "budget_exhausted"):
            self.router.hedge_event(event)

    def refused(self, n: int, exc: RejectedError, rec: Recorder) -> None:
        """Attempt ``n`` was refused (recorded by ``rec``); a refused first attempt is not
        hedged."""
        outcome = refusal_outcome(exc)
        self.results[n] = (outcome, exc, rec, OUTCOMES[outcome])
        self.stop = self.stop or n == 1

    def judged(self, n: int, outcome: int, value: Any, route: Route) -> bool:
        """Attempt ``n`` ran and was judged ``outcome``: True if it won (a success). An
        ignored error stops the hedging."""
        self.results[n] = (outcome, value, route.rec, route.label)
        if outcome == SUCCESS:
            return True
        if outcome == IGNORED:
            self.stop = True
        return False

    def failed(self, exc: BaseException) -> int:
        """The race raised ``exc`` (called in its handler). Every attempt failed: the caller's
        call is counted by the first one (returned: settle it), unless that one never got a
        verdict, and then ``exc`` stands. Cancelled or interrupted: the call ends uncounted, as
        an unhedged one would, and ``exc`` passes through."""
        if isinstance(exc, Exception):
            if 1 in self.results:
                return 1
            raise exc
        dep = self.dep
        for outcome, _value, rec, _label in self.results.values():
            if rec is dep:
                dep.window.supersede(outcome)
        raise exc

    def settle(self, main: int) -> tuple[int, Any]:
        """Count the caller's call once (by attempt ``main``); its outcome, or raise its
        refusal."""
        dep = self.dep
        for n, (outcome, _value, rec, _label) in self.results.items():
            if n != main and rec is dep:
                dep.window.supersede(outcome)
        outcome, value, rec, label = self.results[main]
        self.router.decided(rec, label)
        if outcome in _REFUSALS:
            raise value
        return outcome, value


def hedged_async(
    guard: Guard, router: Router, *, in_pool: bool
) -> Callable[..., Awaitable[tuple[int, Any]]]:
    """The attempt function of a hedged call awaited on an event loop."""
    from ._async import attempt_routed

    dep = guard.dependency
    hedge = guard.hedge
    assert hedge is not None
    check_hedge(dep, is_async=True)
    throttle = router.throttle(guard)

    async def one(
        dep: Dependency,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ignore: tuple[type[BaseException], ...],
        time_limit: float,
        deadline_at: float | None,
    ) -> tuple[int, Any]:
        clock = dep._clock
        race = _Race(dep, router, throttle)

        async def racer(n: int) -> tuple[int, Any]:
            limit = attempt_timeout(dep.policy.timeout, deadline_at, clock())
            try:
                route = router.route(fn, limit, dep._capacity(in_pool), not in_pool)
            except RejectedError as exc:
                race.refused(n, exc, router.rec)
                raise
            try:
                outcome, value = await attempt_routed(
                    dep, route, args, kwargs, ignore, limit, deadline_at, in_pool=in_pool
                )
            except RejectedError as exc:
                race.refused(n, exc, route.rec)
                raise
            if race.judged(n, outcome, value, route):
                return n, value
            raise value

        try:
            main, _ = await run_hedged(
                racer,
                delay=race.delay(),
                max_attempts=hedge.max_attempts,
                allow=race.allow,
                on_event=race.on_event,
            )
        except BaseException as exc:
            main = race.failed(exc)
        return race.settle(main)

    return one


class _Running:
    """One attempt of a sync hedged call, submitted to the pool."""

    __slots__ = ("done", "due", "job", "judged", "limit", "n", "outer", "route", "start", "state")

    def __init__(self, n: int, route: Route, start: float, limit: float) -> None:
        self.n = n
        self.route = route
        self.start = start  # dependency clock
        self.limit = limit
        self.due = time.monotonic() + limit  # real time: the race waits for real
        self.state = _LIVE
        self.judged = False
        self.outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.job: Any = None


def hedged_sync(guard: Guard, router: Router) -> Callable[..., tuple[int, Any]]:
    """The attempt function of a hedged sync call under thread isolation."""
    from ._sync import acquire, take_token

    dep = guard.dependency
    hedge = guard.hedge
    assert hedge is not None
    check_hedge(dep, is_async=False)
    throttle = router.throttle(guard)

    def one(
        dep: Dependency,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ignore: tuple[type[BaseException], ...],
        timeout: float,
        deadline_at: float | None,
    ) -> tuple[int, Any]:
        clock = dep._clock
        pool = dep._pool or dep._thread_pool()
        lock = threading.Lock()
        race = _Race(dep, router, throttle)
        running: dict[concurrent.futures.Future[Any], _Running] = {}

        def refused(n: int, exc: RejectedError, rec: Recorder) -> concurrent.futures.Future[Any]:
            race.refused(n, exc, rec)
            outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
            outer.set_exception(exc)
            return outer

        def submit(n: int) -> concurrent.futures.Future[Any]:
            limit = attempt_timeout(dep.policy.timeout, deadline_at, clock())
            try:
                route = router.route(fn, limit, dep._capacity(True))
            except RejectedError as exc:
                return refused(n, exc, router.rec)
            rec = route.rec
            permits = pool.permits
            try:
                take_token(dep, rec, deadline_at)
                acquire(permits, rec, RUN, clock, deadline_at, may_wait=n == 1)  # hedges never wait
            except BaseException as exc:
                route.not_admitted(exc)
                if isinstance(exc, RejectedError):
                    return refused(n, exc, rec)
                raise
            attempt = _Running(n, route, clock(), limit)

            def finished() -> None:  # on the worker's thread, once the job is over
                with lock:
                    if attempt.state == _LIVE:
                        attempt.state = _DONE
                attempt.done.set_result(None)
                route.close()

            attempt.job = pool.submit(route.fn, args, kwargs, finished, permits, not route.sample)
            running[attempt.outer] = attempt
            return attempt.outer

        def judge(attempt: _Running) -> None:
            # On the caller's thread: the worker is through with the job.
            attempt.judged = True
            route, job = attempt.route, attempt.job
            rec = route.rec
            now = clock()
            latency = now - attempt.start
            error = job.error
            if error is not None and not isinstance(error, Exception):
                route.abandon()
                attempt.outer.set_exception(error)  # KeyboardInterrupt...: the caller's
                return
            outcome, value = rec._job_done(
                route.decision, pool, job, True, latency, now, attempt.limit, ignore
            )
            route.finished(outcome, value, latency, now)
            if race.judged(attempt.n, outcome, value, route):
                attempt.outer.set_result((attempt.n, value))
            else:
                attempt.outer.set_exception(value)

        def expire(attempt: _Running) -> None:
            with lock:
                if attempt.state != _LIVE:
                    return  # the worker just finished: judged on the next look
                attempt.state = _TIMED_OUT
            attempt.judged = True
            pool.abandon(attempt.job)
            route = attempt.route
            now = clock()
            latency = now - attempt.start
            error = route.rec._timeout(route.decision, latency, now, attempt.limit)
            route.finished(TIMEOUT, error, latency, now)
            race.judged(attempt.n, TIMEOUT, error, route)
            attempt.outer.set_exception(error)

        def wait(
            fs: set[concurrent.futures.Future[Any]],
            timeout: float | None = None,
            return_when: str = concurrent.futures.FIRST_COMPLETED,
        ) -> tuple[set[Any], set[Any]]:
            # concurrent.futures.wait's contract, over attempts that may also time out.
            end = None if timeout is None else time.monotonic() + timeout
            while True:
                done = {f for f in fs if f.done()}
                if done:
                    return done, fs - done
                live = [running[f] for f in fs]
                now = time.monotonic()
                if end is not None and now >= end:
                    return set(), set(fs)
                due = min(a.due for a in live)
                if end is not None:
                    due = min(due, end)
                concurrent.futures.wait(
                    [a.done for a in live], max(0.0, due - now), concurrent.futures.FIRST_COMPLETED
                )
                now = time.monotonic()
                for attempt in live:
                    if attempt.done.done():
                        judge(attempt)
                    elif now >= attempt.due:
                        expire(attempt)

        def abandon(n: int, outer: concurrent.futures.Future[Any]) -> None:
            attempt = running.get(outer)
            if attempt is None or attempt.judged:
                return
            with lock:
                live = attempt.state == _LIVE
                attempt.state = _ABANDONED
            if live:
                pool.abandon(attempt.job)
            attempt.route.abandon()

        try:
            main, _ = run_hedged_sync(
                submit,
                delay=race.delay(),
                max_attempts=hedge.max_attempts,
                allow=race.allow,
                on_event=race.on_event,
                abandon=abandon,
                wait=wait,
            )
        except BaseException as exc:
            main = race.failed(exc)
        return race.settle(main)

    return one
