"""The timeout step: how long one attempt may run, and cutting coroutines off when it ends.

Two bounds meet here. ``Policy.timeout`` bounds each attempt; a call-site ``deadline`` (seconds,
``protect(..., deadline=...)``) bounds the whole call, retries, waits for a token and back-off
included. An attempt gets whichever ends first (:func:`attempt_timeout`).

How an attempt is cut off depends on where it runs: a thread-pool call is abandoned by its caller
at the timeout (the worker keeps its slot until the function returns); a coroutine is cancelled by
a per-loop deadline queue (:class:`Deadlines`, one loop timer per dependency, not one per call);
a sync call on the caller's thread cannot be preempted and is judged when it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["DONE", "EXPIRED", "LIVE", "Deadlines", "attempt_timeout"]

# States of one deadline entry ``[due, task, state]``.
LIVE, DONE, EXPIRED = 0, 1, 2


def attempt_timeout(timeout: float, deadline_at: float | None, now: float) -> float:
    """Seconds the next attempt may take: the policy's timeout, or less if the deadline is near."""
    if deadline_at is None:
        return timeout
    return max(0.0, min(timeout, deadline_at - now))


class Deadlines:
    """Cancels tasks whose deadline passed, with one loop timer per dependency and loop.

    Deadlines of one dependency mostly arrive in order (same timeout), so a deque is a priority
    queue; an entry due earlier than the last one (the timeout was lowered at runtime, or a
    call-site deadline is near) gets a timer of its own. Invariant: while the queue holds
    entries, the timer is due no later than the first one. Whoever adds an entry must mark it
    ``DONE`` on every way out, or it would cancel the task later, while it runs unrelated code.
    """

    __slots__ = ("_handle", "_loop", "_now", "_q", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # asyncio's own loops tell time with time.monotonic; calling it directly saves a
        # Python-level method call per protected coroutine. Other loops keep their clock.
        default_clock = type(loop).time is asyncio.BaseEventLoop.time
        self._now: Callable[[], float] = time.monotonic if default_clock else loop.time
        self._q: deque[list[Any]] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0

    def add(self, task: asyncio.Task[Any] | None, timeout: float) -> list[Any]:
        """Arm a deadline ``timeout`` seconds from now for ``task``; returns its entry."""
        q = self._q
        while q and q[0][2] == DONE:
            q.popleft()
        deadline = self._now() + timeout
        entry: list[Any] = [deadline, task, LIVE]
        if q:
            if deadline < q[-1][0]:
                self._loop.call_at(deadline, self._expire, entry)
            else:
                q.append(entry)
            return entry
        q.append(entry)
        # The queue had emptied: a timer still set for an older, later deadline (the timeout
        # was lowered) must not be waited for.
        if self._handle is None or self._when > deadline:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(deadline, self._fire)
            self._when = deadline
        return entry

    def live(self) -> int:
        """Deadlines still armed in the queue (calls in flight)."""
        return sum(1 for entry in self._q if entry[2] == LIVE)

    @staticmethod
    def _expire(entry: list[Any]) -> None:
        if entry[2] == LIVE and entry[1] is not None:
            entry[2] = EXPIRED
            entry[1].cancel()

    def _fire(self) -> None:
        self._handle = None
        q = self._q
        now = self._loop.time()
        while q:
            entry = q[0]
            if entry[2] != LIVE:
                q.popleft()
            elif entry[0] <= now:
                q.popleft()
                self._expire(entry)
            else:
                self._handle = self._loop.call_at(entry[0], self._fire)
                self._when = entry[0]
                return
