"""The record step: what a finished (or refused) attempt leaves in the window and the breaker.

Plain, non-blocking bookkeeping shared by both drivers, the fast paths and tickets: each method
records one outcome in the dependency's rolling window, feeds the breaker its verdict, and
returns the error the caller is to get, if any. The verdicts (``_job_done``, ``_returned``,
``_coroutine_returned``, ``_coroutine_raised``) judge how an attempt ended for each way one
runs (a pool worker, the caller's thread, a coroutine), so every runner only calls and waits.
``Dependency`` inherits it, and so does an experiment's ``Shadow``.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    LimitExceededError,
    RateLimitedError,
)
from ._adaptive import AdaptiveLimiter
from ._breaker import REJECT, RUN, Breaker, State, StateChange
from ._timeout import DONE, EXPIRED
from ._window import (
    FAILURE,
    IGNORED,
    RATE_LIMITED,
    REJECTED,
    RETRIED,
    RETRY_BUDGET_EXHAUSTED,
    SHORT_CIRCUITED,
    SUCCESS,
    TIMEOUT,
    RollingWindow,
)

if TYPE_CHECKING:
    from ._bulkhead import ConcurrencyLimit, Job, ThreadBulkhead
    from ._policy import Policy
    from ._ratelimit import TokenBucket
    from ._retry import Retrier

__all__ = ["Listener", "Recorder"]

log = logging.getLogger("resilience.circuit")

Listener = Callable[[StateChange], None]


class Recorder:
    """The record step of a dependency (its state lives on ``Dependency``)."""

    name: str
    policy: Policy
    window: RollingWindow
    breaker: Breaker
    _clock: Callable[[], float]
    _listeners: list[Listener]
    _shared_listeners: list[Listener]
    _loop_warned: bool

    def _emit(self, change: StateChange) -> None:
        if change.new is State.OPEN:
            log.warning("circuit %s opened: %s", self.name, change.reason)
        else:
            log.info(
                "circuit %s %s -> %s (%s)",
                self.name,
                change.old.value,
                change.new.value,
                change.reason,
            )
        for listener in (*self._listeners, *self._shared_listeners):
            try:
                listener(change)
            except Exception:
                log.exception("state-change listener %r failed", listener)

    def _acquire(self) -> int:
        """The breaker step, for a circuit that is not closed (a closed one answers RUN, which
        callers check first): RUN or TRIAL, or the ``CircuitOpenError`` raised, recorded."""
        now = self._clock()
        decision = self.breaker.acquire(now)
        if decision == REJECT:
            raise self._short_circuit(now)
        return decision

    def _short_circuit(self, now: float) -> CircuitOpenError:
        self.window.record(SHORT_CIRCUITED, now)
        br = self.breaker
        err = CircuitOpenError(self.name, br.state.value, br.retry_after(now))
        err.__cause__ = br.last_error
        return err

    def _reject(
        self, limit: ConcurrencyLimit, waited: float = 0.0, decision: int = RUN
    ) -> BulkheadFullError:
        """A call the concurrency limit refused: ``LimitExceededError`` for an adaptive limit,
        ``BulkheadFullError`` for a fixed one. ``decision``: the breaker's for the call, whose
        trial slot is freed (the call never ran)."""
        self.breaker.release(decision)
        self.window.record(REJECTED, self._clock())
        if isinstance(limit, AdaptiveLimiter):
            return LimitExceededError(self.name, limit.limit, limit.inflight, waited)
        return BulkheadFullError(self.name, limit.limit)

    def _rate_limited(self, bucket: TokenBucket, retry_after: float) -> RateLimitedError:
        self.window.record(RATE_LIMITED, self._clock())
        config = bucket.config
        return RateLimitedError(self.name, retry_after, config.rate, config.per)

    def _success(self, decision: int, latency: float, now: float) -> None:
        window = self.window
        if latency < window.slow_call:
            window.add_success(latency, now)
        else:
            window.record_call(SUCCESS, latency, now)
        if decision != RUN:
            self.breaker.on_result(decision, latency < window.slow_call, now)
        elif latency >= window.slow_call:
            self.breaker.on_slow_success(now)

    def _failed(
        self,
        decision: int,
        err: Exception,
        latency: float,
        now: float,
        ignore: tuple[type[BaseException], ...],
    ) -> tuple[int, Exception]:
        """Record a call that raised; its outcome (FAILURE, or IGNORED for ``ignore``)."""
        if ignore and isinstance(err, ignore):
            self.window.record(IGNORED, now)
            self.breaker.release(decision)
            return IGNORED, err
        self.window.record_call(FAILURE, latency, now)
        self.breaker.on_result(decision, False, now, err)
        return FAILURE, err

    def _timeout(
        self, decision: int, latency: float, now: float, timeout: float | None = None
    ) -> CallTimeoutError:
        err = CallTimeoutError(self.name, self.policy.timeout if timeout is None else timeout)
        self.window.record_call(TIMEOUT, latency, now)
        self.breaker.on_result(decision, False, now, err)
        return err

    # -- verdicts: how an attempt ended, judged and recorded, for each way one runs --------

    def _job_done(
        self,
        decision: int,
        pool: ThreadBulkhead,
        job: Job,
        finished: bool,
        latency: float,
        now: float,
        time_limit: float,
        ignore: tuple[type[BaseException], ...],
    ) -> tuple[int, Any]:
        """A pool job's attempt, once its caller stopped waiting (``finished``: the worker
        was through in time). Not finished: a timeout, the job abandoned (its worker finishes
        on its own). A BaseException the job raised (KeyboardInterrupt, SystemExit) is the
        caller's: its trial slot freed, re-raised as if the function had been called directly.
        Else a success, a failure or an ignored error."""
        if not finished:
            pool.abandon(job)
            return TIMEOUT, self._timeout(decision, latency, now, time_limit)
        error = job.error
        if error is None:
            self._success(decision, latency, now)
            return SUCCESS, job.result
        if isinstance(error, Exception):
            return self._failed(decision, error, latency, now, ignore)
        self.breaker.release(decision)
        raise error

    def _returned(
        self, decision: int, result: Any, latency: float, now: float, timeout: float
    ) -> tuple[int, Any]:
        """A sync call on the caller's thread returned. It cannot be preempted, so one that
        returned after its timeout is judged a timeout (the caller gets ``CallTimeoutError``)."""
        if latency > timeout:
            return TIMEOUT, self._timeout(decision, latency, now, timeout)
        self._success(decision, latency, now)
        return SUCCESS, result

    def _coroutine_returned(
        self,
        decision: int,
        entry: list[Any],
        task: asyncio.Task[Any] | None,
        result: Any,
        latency: float,
        now: float,
        time_limit: float,
    ) -> tuple[int, Any]:
        """A coroutine returned; ``entry`` is its deadline (``_timeout.Deadlines``). One that
        swallowed the cancellation of its deadline and returned is judged a timeout, and its
        task's cancellation taken back."""
        if entry[2] == EXPIRED:
            if task is not None:
                task.uncancel()
            return TIMEOUT, self._timeout(decision, latency, now, time_limit)
        entry[2] = DONE
        self._success(decision, latency, now)
        return SUCCESS, result

    def _coroutine_raised(
        self,
        decision: int,
        entry: list[Any],
        task: asyncio.Task[Any] | None,
        error: Exception | asyncio.CancelledError,
        latency: float,
        now: float,
        time_limit: float,
        ignore: tuple[type[BaseException], ...],
    ) -> tuple[int, Any] | None:
        """A coroutine raised. Cancelled by its deadline: a timeout (the task's cancellation
        taken back, the caller gets ``CallTimeoutError``); cancelled by anyone else: None, not
        judged (not the dependency's fault: the cancellation passes through); else a failure
        or an ignored error."""
        if isinstance(error, asyncio.CancelledError):
            if entry[2] != EXPIRED:
                entry[2] = DONE
                return None
            if task is not None:
                task.uncancel()
            return TIMEOUT, self._timeout(decision, latency, now, time_limit)
        entry[2] = DONE
        return self._failed(decision, error, latency, now, ignore)

    def _retrying(self, outcome: int) -> None:
        """An attempt that ended in ``outcome`` is retried."""
        self.window.supersede(outcome)
        self.window.record(RETRIED, self._clock())

    def _retries_stopped(self, retrier: Retrier | None) -> None:
        if retrier is not None and retrier.exhausted:
            self.window.record(RETRY_BUDGET_EXHAUSTED, self._clock())

    def _warn_on_loop(self, fn: Callable[..., Any]) -> None:
        if self._loop_warned:
            return
        self._loop_warned = True
        name = getattr(fn, "__qualname__", None) or repr(fn)
        warnings.warn(
            f"resilience: the sync function {name} protected as dependency {self.name!r} was "
            "called on a running event loop's thread: the whole loop waits for it. Make it "
            "`async def`, or await it through the dependency's thread pool: "
            f"`await resilience.registry().dependency({self.name!r}).acall({name}, ...)`.",
            RuntimeWarning,
            stacklevel=4,
        )
