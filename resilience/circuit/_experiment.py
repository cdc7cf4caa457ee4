"""Routes: where one attempt goes, who records it, and a tagged call's part of an experiment.

The plain pipeline (``_sync`` / ``_async``) admits an attempt through the dependency's breaker and
records it in the dependency's window. Two kinds of calls need more say over each attempt:

- a *tagged* call (a FIT recipe is active, see ``_shadow``) asks the recipe for a fault on every
  attempt and goes to the experiment's shadow or to the dependency accordingly;
- a *hedged* call runs several attempts at once and must know, afterwards, where each one was
  recorded (so the caller's call is counted once).

A :class:`Route` says it for one attempt: the recorder (the dependency or a shadow), the breaker's
decision, the function to run (the fault's wrapper, or the real one), whether the concurrency
limit may learn from the attempt's latency, the shadow to mirror a real outcome into, and what to
call once the attempt's permit or thread is given back. ``Plain.route`` is the dependency's own
admission; ``TaggedCall.route`` an experiment's. Choosing a route takes no lock beyond the
breakers' and the experiment book's short ones, and never runs user code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BulkheadFullError, CircuitOpenError, RejectedError
from ._breaker import REJECT, RUN, State
from ._retry import Retrier
from ._window import OUTCOMES, RATE_LIMITED, REJECTED, SHORT_CIRCUITED

if TYPE_CHECKING:
    from ..context import FaultContext
    from ._dependency import Dependency
    from ._guard import Guard
    from ._hedge import HedgeThrottle
    from ._record import Recorder
    from ._shadow import Shadow

__all__ = ["INJECTED", "Plain", "Route", "TaggedCall", "refusal_outcome"]

INJECTED = "injected"  # the resilience_fit_calls_total outcome of an attempt a fault ran in
_CLOSED = State.CLOSED
_OPEN_FOR_REAL = (State.CLOSED, State.FORCED_CLOSED)


def _nothing() -> None:
    return None


def refusal_outcome(exc: BaseException) -> int:
    """The window outcome a refusal was recorded as."""
    from ..errors import RateLimitedError

    if isinstance(exc, CircuitOpenError):
        return SHORT_CIRCUITED
    if isinstance(exc, RateLimitedError):
        return RATE_LIMITED
    return REJECTED


class Route:
    """One attempt's way through the pipeline (see the module docstring)."""

    __slots__ = (
        "_ends",
        "decision",
        "end",
        "fault",
        "fn",
        "label",
        "mirror",
        "mirror_decision",
        "ran",
        "rec",
        "sample",
    )

    def __init__(
        self,
        rec: Recorder,
        decision: int,
        fn: Callable[..., Any],
        *,
        sample: bool = True,
        end: Callable[[], None] = _nothing,
        mirror: Shadow | None = None,
        mirror_decision: int = RUN,
    ) -> None:
        self.rec = rec
        self.decision = decision
        self.fn = fn
        self.sample = sample
        self._ends = [end]
        self.mirror = mirror
        self.mirror_decision = mirror_decision
        self.fault: Any = None  # the fault chosen for the attempt, if any
        self.ran: list[bool] | None = None  # set by a fault's wrapper when it ran
        self.label = ""  # the attempt's resilience_fit_calls_total outcome, once known

    def close(self) -> None:
        """The attempt let go of its permit or thread: its end runs (once, whoever calls)."""
        try:
            end = self._ends.pop()  # atomic: a worker and the caller may both get here
        except IndexError:
            return
        end()

    def refused(self, exc: BaseException) -> None:
        """The attempt was refused after its route was chosen (no token, no permit); the
        recorder's trial slot is the caller's to free, the mirror's is freed here."""
        outcome = refusal_outcome(exc)
        self.label = OUTCOMES[outcome]
        if self.mirror is not None:
            self.mirror.refused(self.mirror_decision, outcome, self.rec._clock())
        self.close()

    def abandon(self) -> None:
        """The attempt will not be judged (interrupted, or a hedge that lost): free its trial
        slots. Its permit or thread is still held until it returns (``close``)."""
        self.rec.breaker.release(self.decision)
        self.unmirror()

    def unmirror(self) -> None:
        """Free the mirror's trial slot only (the recorder's was freed already)."""
        if self.mirror is not None:
            self.mirror.breaker.release(self.mirror_decision)

    def finished(self, outcome: int, value: Any, latency: float, now: float) -> None:
        """The attempt ran and the recorder judged it ``outcome``."""
        if self.mirror is not None:
            self.mirror.mirror(self.mirror_decision, outcome, value, latency, now)
        self.label = INJECTED if self.ran is not None and self.ran[0] else OUTCOMES[outcome]

    # -- an attempt on this route, through the drivers' limit and run steps (attempt_routed) --

    def not_admitted(self, exc: BaseException) -> None:
        """The rate-limit step raised: refused (no token), or interrupted while it waited for
        one. Either way nothing ran and nothing holds a permit."""
        if isinstance(exc, RejectedError):
            self.rec.breaker.release(self.decision)
            self.refused(exc)
        else:
            self.abandon()
            self.close()

    def stopped(self, exc: BaseException, pooled: bool) -> None:
        """The runner raised, having freed the recorder's trial slot itself: refused by the
        concurrency limit, or interrupted or cancelled (a hedge that lost). ``pooled``: the
        attempt went to the thread pool, whose worker closes the route once it is through."""
        if isinstance(exc, RejectedError):
            self.refused(exc)
        else:
            self.unmirror()
            if not pooled:
                self.close()

    def ended(self, outcome: int, value: Any, latency: float, now: float, pooled: bool) -> None:
        """The runner judged the attempt ``outcome`` (``pooled``: see ``stopped``)."""
        self.finished(outcome, value, latency, now)
        if not pooled:
            self.close()


class Plain:
    """The route of an untagged attempt: the dependency's breaker, recorder and limits."""

    __slots__ = ("dep", "rec")

    def __init__(self, dep: Dependency) -> None:
        self.dep = dep
        self.rec: Recorder = dep

    def throttle(self, guard: Guard) -> HedgeThrottle:
        assert guard.throttle is not None
        return guard.throttle

    def hedge_event(self, event: str) -> None:
        self.dep._hedge_event(event)

    def decided(self, rec: Recorder, label: str) -> None:
        return None

    def route(
        self, fn: Callable[..., Any], timeout: float, capacity: int, is_async: bool = False
    ) -> Route:
        dep = self.dep
        return Route(dep, RUN if dep.breaker.state is _CLOSED else dep._acquire(), fn)


class TaggedCall:
    """One caller call under a FIT recipe: its routes, retry budget and experiment metrics.

    ``rec`` is where the call's latest deciding attempt was recorded (the fallback and the
    retry bookkeeping go there too); ``label`` its ``resilience_fit_calls_total`` outcome,
    counted once by ``finish``.
    """

    __slots__ = ("dep", "fit", "label", "rec", "shadow")

    def __init__(self, dep: Dependency, fit: FaultContext) -> None:
        self.dep = dep
        self.fit = fit
        self.shadow = dep.experiments.shadow(dep.name, fit.recipe_name, dep.policy, dep._clock)
        self.rec: Recorder = self.shadow
        self.label = ""

    def route(
        self,
        fn: Callable[..., Any],
        timeout: float,
        capacity: int,
        is_async: bool = False,
        wrap: bool = True,
    ) -> Route:
        """Admit one attempt into the experiment; a refusal raises (recorded where it belongs).

        ``capacity``: the permits (or threads plus queue) of the limit the attempt will hold;
        attempts with a fault may hold ``bulkhead_share`` of them, at least one (an attempt
        FIT leaves alone is a real call and takes its permit as any call does). ``is_async``: ``fn``
        is a coroutine function (a fault wraps it with ``wrap_async``); ``wrap=False``: the
        caller applies ``route.fault`` itself (a ticket).
        """
        dep, shadow = self.dep, self.shadow
        fault = self.fit.fault_for(dep.name)
        clock = dep._clock
        sdecision = RUN
        if shadow.breaker.state is not _CLOSED:
            sdecision = shadow.breaker.acquire(clock())
            if sdecision == REJECT:
                self._refused_by(shadow, SHORT_CIRCUITED)
                raise shadow._short_circuit(clock())
        if fault is None:  # a real call: the dependency's breaker admits and records it
            decision = RUN
            breaker = dep.breaker
            if breaker.state is not _CLOSED:
                now = clock()
                decision = breaker.acquire(now)
                if decision == REJECT:
                    shadow.refused(sdecision, SHORT_CIRCUITED, now)
                    self._refused_by(dep, SHORT_CIRCUITED)
                    raise dep._short_circuit(now)
            self.rec = dep
            return Route(dep, decision, fn, mirror=shadow, mirror_decision=sdecision)
        # A fault: the experiment's alone. A real outage (the dependency's circuit not closed)
        # still refuses it, without taking the dependency's trial slots; and faulty calls may
        # hold at most their share of the dependency's permits or threads.
        state = dep.breaker.state
        if state not in _OPEN_FOR_REAL:
            shadow.breaker.release(sdecision)
            self._refused_by(shadow, SHORT_CIRCUITED)
            raise self._shared_open(state)
        experiments = dep.experiments
        share = max(1, int(self.fit.bulkhead_share * capacity))
        if not experiments.take_slot(share):
            shadow.breaker.release(sdecision)
            self._refused_by(shadow, REJECTED)
            shadow.window.record(REJECTED, clock())
            raise BulkheadFullError(dep.name, share)
        ran = [False]
        if not wrap:
            faulty = fn
        elif is_async:
            faulty = _flagging_async(fault.wrap_async(fn, timeout), ran)
        else:
            faulty = _flagging(fault.wrap_sync(fn, timeout), ran)
        route = Route(shadow, sdecision, faulty, sample=False, end=experiments.give_slot)
        route.ran = ran
        route.fault = fault
        self.rec = shadow
        return route

    def _shared_open(self, state: State) -> CircuitOpenError:
        breaker = self.dep.breaker
        now = self.dep._clock()
        self.shadow.window.record(SHORT_CIRCUITED, now)
        err = CircuitOpenError(self.dep.name, state.value, breaker.retry_after(now))
        err.__cause__ = breaker.last_error
        return err

    def _refused_by(self, rec: Recorder, outcome: int) -> None:
        self.rec = rec
        self.label = OUTCOMES[outcome]

    # -- what the run loop asks of a tagged call ------------------------------------------------

    def start(self, guard: Guard) -> float | None:
        """The call begins: pay into the experiment's retry and hedge budgets; the call's
        deadline."""
        now = self.dep._clock()
        retry = guard.retry
        if retry is not None:
            budget = self.shadow.retry_budget(retry)
            if budget is not None:
                budget.deposit(now)
        if guard.hedge is not None:
            self.shadow.hedge_throttle(guard.hedge).on_call(now)
        return None if guard.deadline is None else now + guard.deadline

    def retrier(self, guard: Guard) -> Retrier | None:
        retry = guard.retry
        if retry is None:
            return None
        return Retrier(retry, self.shadow.retry_budget(retry), guard.ignore)

    def throttle(self, guard: Guard) -> HedgeThrottle:
        """The experiment's own hedge budget (hedges of tagged calls never spend the real one)."""
        assert guard.hedge is not None
        return self.shadow.hedge_throttle(guard.hedge)

    def hedge_event(self, event: str) -> None:
        return None  # experiments' hedges stay out of resilience_hedges_total

    def decided(self, rec: Recorder, label: str) -> None:
        """A hedged call's deciding attempt was recorded by ``rec`` as ``label``."""
        self.rec = rec
        self.label = label

    def finish(self) -> None:
        """The caller's call is over: count it once, by its deciding attempt."""
        if self.label:
            self.dep.experiments.count(self.shadow.recipe, self.label)


def _flagging(fn: Callable[..., Any], ran: list[bool]) -> Callable[..., Any]:
    def faulty(*args: Any, **kwargs: Any) -> Any:
        ran[0] = True
        return fn(*args, **kwargs)

    return faulty


def _flagging_async(fn: Callable[..., Any], ran: list[bool]) -> Callable[..., Any]:
    async def faulty(*args: Any, **kwargs: Any) -> Any:
        ran[0] = True
        return await fn(*args, **kwargs)

    return faulty
