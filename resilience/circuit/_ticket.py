"""Tickets: calls the caller runs itself, admitted by ``Dependency.begin`` and ended once.

For IO the library cannot wrap in one function, such as a write pipelined to several servers
from one thread: send everything, then read every reply (resilience4j's acquire / onSuccess /
onError split). ``begin`` asks the active FIT recipe (``ticket.fault``: apply it with
``fault.wrap_sync(fn, timeout)``), the breaker (``CircuitOpenError``), the rate limit without
waiting (``RateLimitedError``) and the concurrency limit (``BulkheadFullError``); the caller ends
the ticket exactly once with ``success()``, ``failure(exc)``, ``timeout()`` or ``cancel()``, and
enforces ``policy.timeout`` itself (socket timeouts). Under a FIT recipe a ticket takes the same
route as a protected call's attempt (``_experiment``): a ticket with a fault is the experiment's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..context import FIT
from ..errors import CallTimeoutError, RejectedError
from ._breaker import RUN, State
from ._experiment import TaggedCall
from ._window import SUCCESS, TIMEOUT

if TYPE_CHECKING:
    from ..context import FaultContext
    from ._dependency import Dependency
    from ._experiment import Route
    from ._record import Recorder

__all__ = ["Ticket", "begin"]

_CLOSED = State.CLOSED


def _never() -> None:  # a ticket's function is the caller's own IO, never called here
    return None


def _limits(dep: Dependency, rec: Recorder) -> None:
    """The rate limit (no waiting) and the concurrency limit; refusals recorded by ``rec``."""
    bucket = dep._rate_limiter
    if bucket is not None:
        delay = bucket.try_take(dep._clock())
        if delay > 0.0:
            raise rec._rate_limited(bucket, delay)
    limiter = dep._limiter
    if not limiter.try_acquire():
        raise rec._reject(limiter)


def begin(dep: Dependency) -> Ticket:
    """Admit one call that the caller runs itself, outside ``call``/``acall``
    (``Dependency.begin``).

    For IO the library cannot wrap in one function, such as a write pipelined to several
    servers from one thread: send everything, then read every reply. This is resilience4j's
    acquire / onSuccess / onError split. ``begin`` asks the active FIT recipe (``ticket.fault``:
    apply it with ``fault.wrap_sync(fn, timeout)``), the breaker (``CircuitOpenError``), the
    rate limit without waiting and the concurrency limit (``BulkheadFullError``); the caller
    must end the ticket exactly once with ``success()``, ``failure(exc)``, ``timeout()`` or
    ``cancel()``, and enforces ``policy.timeout`` itself (socket timeouts).
    """
    fit = FIT.get()
    if fit is not None:
        return _begin_tagged(dep, fit)
    clock = dep._clock
    breaker = dep.breaker
    decision = RUN if breaker.state is _CLOSED else dep._acquire()
    try:
        bucket = dep._rate_limiter
        if bucket is not None:
            delay = bucket.try_take(clock())
            if delay > 0.0:
                raise dep._rate_limited(bucket, delay)
        limiter = dep._limiter
        if not limiter.try_acquire():
            raise dep._reject(limiter)
    except BaseException:
        breaker.release(decision)
        raise
    return Ticket(dep, dep, decision, clock(), None, None)


def _begin_tagged(dep: Dependency, fit: FaultContext) -> Ticket:
    tc = TaggedCall(dep, fit)
    try:
        route = tc.route(_never, dep.policy.timeout, dep._limiter.limit, wrap=False)
    except RejectedError:
        tc.finish()
        raise
    rec = route.rec
    try:
        _limits(dep, rec)
    except RejectedError as exc:
        rec.breaker.release(route.decision)
        route.refused(exc)
        tc.decided(rec, route.label)
        tc.finish()
        raise
    except BaseException:
        route.abandon()
        route.close()
        raise
    if route.fault is not None:
        route.ran = [True]  # the caller applies ticket.fault to its own IO
    return Ticket(dep, rec, route.decision, dep._clock(), route, tc)


class Ticket:
    """One call admitted by ``Dependency.begin``; end it exactly once."""

    __slots__ = ("_decision", "_dependency", "_ended", "_rec", "_route", "_start", "_tc", "fault")

    def __init__(
        self,
        dependency: Dependency,
        rec: Recorder,
        decision: int,
        start: float,
        route: Route | None,
        tc: TaggedCall | None,
    ) -> None:
        self._dependency = dependency
        self._rec = rec
        self._decision = decision
        self._start = start
        self._ended = False
        self._route = route
        self._tc = tc
        self.fault: Any = None if route is None else route.fault

    def _end(self, dropped: bool, ran: bool = True) -> tuple[float, float]:
        if self._ended:
            raise RuntimeError("a Ticket is ended exactly once")
        self._ended = True
        dep = self._dependency
        now = dep._clock()
        route = self._route
        if ran and (route is None or route.sample):
            dep._limiter.release(now - self._start, dropped)
        else:
            dep._limiter.give_back()
        return now - self._start, now

    def _judged(self, outcome: int, value: Any, latency: float, now: float) -> None:
        # A tagged ticket: the route mirrors the outcome, frees its slot, and the call counts.
        route, tc = self._route, self._tc
        if route is not None and tc is not None:
            route.finished(outcome, value, latency, now)
            route.close()
            tc.decided(route.rec, route.label)
            tc.finish()

    def success(self) -> None:
        latency, now = self._end(False)
        self._rec._success(self._decision, latency, now)
        if self._route is not None:
            self._judged(SUCCESS, None, latency, now)

    def failure(self, error: Exception, ignore: tuple[type[BaseException], ...] = ()) -> None:
        latency, now = self._end(not (ignore and isinstance(error, ignore)))
        outcome, _ = self._rec._failed(self._decision, error, latency, now, ignore)
        if self._route is not None:
            self._judged(outcome, error, latency, now)

    def timeout(self) -> CallTimeoutError:
        """Record a timeout; returns the ``CallTimeoutError`` to raise."""
        latency, now = self._end(True)
        error = self._rec._timeout(self._decision, latency, now)
        if self._route is not None:
            self._judged(TIMEOUT, error, latency, now)
        return error

    def cancel(self) -> None:
        """The call never ran (the caller gave up before sending): record nothing."""
        self._end(False, ran=False)
        self._rec.breaker.release(self._decision)
        if self._route is not None:
            self._route.unmirror()
            self._route.close()
