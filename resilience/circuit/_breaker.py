"""The circuit breaker state machine: plain, non-blocking code that returns decisions.

``acquire()`` says whether a call may run (and whether it is a half-open trial), ``on_result()``
feeds back what happened. Both take the time as an argument; neither waits nor runs user code.
Transitions happen under a short lock and are delivered to listeners after it is released.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable

import attrs

from ._policy import Policy
from ._window import RollingWindow

__all__ = ["REJECT", "RUN", "TRIAL", "Breaker", "State", "StateChange"]

log = logging.getLogger("resilience.circuit")


class State(enum.Enum):
    """Circuit states. Forced states are set by an operator (or a flag) and stay until reset."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


@attrs.frozen
class StateChange:
    """A transition of one dependency's circuit."""

    dependency: str
    old: State
    new: State
    at: float
    reason: str


# Decisions returned by Breaker.acquire().
REJECT, RUN, TRIAL = 0, 1, 2

_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN


class Breaker:
    """Opens on failure rate (and optionally slow-call rate) over a rolling window.

    Open -> half-open happens on the first call after ``open_duration`` (no timer thread).
    Half-open admits ``half_open_calls`` trials at once; the rest are rejected. When all trials
    succeed the circuit closes with a fresh window; any failed (or slow) trial reopens it.
    """

    def __init__(
        self,
        name: str,
        policy: Policy,
        window: RollingWindow,
        emit: Callable[[StateChange], None],
        on_move: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._on_move = on_move  # told of every state change at once, under the lock
        self.policy = policy
        self.state = State.CLOSED  # read without the lock on the hot path (a single attribute)
        self.opened_at = 0.0
        self.last_error: BaseException | None = None
        self.opened_count = 0
        self._window = window
        self._emit = emit
        self._lock = threading.Lock()
        self._trials = 0  # trial calls admitted in this half-open period and not yet finished
        self._trial_successes = 0
        # Consecutive failures are counted on the failure path only: a failure continues the
        # streak when the cumulative success count has not moved since the previous one, so
        # the success path pays nothing for this trigger.
        self._streak = 0
        self._streak_successes = -1

    def reset_after_fork(self) -> None:
        """Drop trial slots held by calls of other threads (they do not exist in a fork child)."""
        self._lock = threading.Lock()
        self._trials = self._trial_successes

    @property
    def trials_in_flight(self) -> int:
        """Half-open trial calls admitted and not finished yet."""
        return self._trials - self._trial_successes if self.state is _HALF_OPEN else 0

    def retry_after(self, now: float) -> float | None:
        if self.state is _OPEN:
            return max(0.0, self.opened_at + self.policy.open_duration - now)
        return None

    def acquire(self, now: float) -> int:
        """REJECT, RUN, or TRIAL (a half-open trial whose outcome decides the state)."""
        state = self.state
        if state is _CLOSED or state is State.FORCED_CLOSED:
            return RUN
        if state is State.FORCED_OPEN:
            return REJECT
        change = None
        with self._lock:
            if self.state is _OPEN:
                if now - self.opened_at < self.policy.open_duration:
                    return REJECT
                change = self._move(_HALF_OPEN, now, "open_duration elapsed")
                self._trials = 0
                self._trial_successes = 0
            if self.state is _HALF_OPEN and self._trials < self.policy.half_open_calls:
                self._trials += 1
                decision = TRIAL
            else:
                decision = RUN if self.state in (_CLOSED, State.FORCED_CLOSED) else REJECT
        if change is not None:
            self._emit(change)
        return decision

    def release(self, decision: int) -> None:
        """Give back a trial slot for a call that never ran (bulkhead full) or was ignored."""
        if decision == TRIAL:
            with self._lock:
                if self.state is _HALF_OPEN and self._trials > 0:
                    self._trials -= 1

    def on_result(
        self, decision: int, ok: bool, now: float, error: BaseException | None = None
    ) -> None:
        """Feed back a finished call. ``ok`` is False for failures, timeouts and slow calls."""
        if not ok:
            self.last_error = error
        if decision == TRIAL:
            self._on_trial(ok, now)
        elif not ok and self.state is _CLOSED:
            self._evaluate(now)

    def on_slow_success(self, now: float) -> None:
        """A closed circuit re-evaluates the slow-call rate after a slow success."""
        if self.state is _CLOSED:
            self._evaluate(now, failed=False)

    def _on_trial(self, ok: bool, now: float) -> None:
        change = None
        with self._lock:
            if self.state is not _HALF_OPEN:
                return
            if not ok:
                change = self._move(_OPEN, now, "half-open trial failed")
                self.opened_at = now
                self.opened_count += 1
            else:
                self._trial_successes += 1
                if self._trial_successes >= self.policy.half_open_calls:
                    change = self._move(_CLOSED, now, "half-open trials succeeded")
        if change is not None:
            if change.new is _CLOSED:
                self._window.reset()
            self._emit(change)

    def _consecutive(self, failed: bool) -> str | None:
        limit = self.policy.consecutive_failures
        if limit is None or not failed:
            return None
        successes = self._window.successes()
        with self._lock:
            if successes == self._streak_successes:
                self._streak += 1
            else:
                self._streak, self._streak_successes = 1, successes
            streak = self._streak
        return f"{streak} consecutive failures" if streak >= limit else None

    def _evaluate(self, now: float, failed: bool = True) -> None:
        policy = self.policy
        calls, failure_rate, slow_rate = self._window.rates(now)
        reason = self._consecutive(failed)
        if reason is None:
            if calls < policy.min_calls:
                return
            if failure_rate >= policy.failure_rate:
                reason = f"failure rate {failure_rate:.2f} >= {policy.failure_rate:.2f}"
            elif policy.slow_call_rate is not None and slow_rate >= policy.slow_call_rate:
                reason = f"slow-call rate {slow_rate:.2f} >= {policy.slow_call_rate:.2f}"
            else:
                return
        with self._lock:
            if self.state is not _CLOSED:
                return
            change = self._move(_OPEN, now, f"{reason} over {calls} calls")
            self.opened_at = now
            self.opened_count += 1
            self._streak = 0
        self._emit(change)

    def force(self, state: State | None, now: float) -> None:
        """Force OPEN/CLOSED (``State.FORCED_*``), or ``None`` to return to a fresh closed state."""
        if state not in (None, State.FORCED_OPEN, State.FORCED_CLOSED):
            raise ValueError(f"can only force FORCED_OPEN or FORCED_CLOSED, not {state}")
        with self._lock:
            target = _CLOSED if state is None else state
            if self.state is target:
                return
            change = self._move(target, now, "forced" if state is not None else "reset")
            self._trials = 0
        if state is None:
            self._window.reset()
        self._emit(change)

    def _move(self, new: State, now: float, reason: str) -> StateChange:
        old, self.state = self.state, new
        if self._on_move is not None:
            self._on_move()
        return StateChange(self.name, old, new, now, reason)
