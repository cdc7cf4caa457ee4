"""Hedged calls: when an attempt is slow (or fails), start another; the first good result wins.

Config: ``Hedge(delay=None, max_attempts=2, budget=0.1)``.

- ``delay``: seconds after the start of the last attempt before the next one starts. ``None``
  (default) is adaptive: the dependency's observed p95 latency (from its rolling window), so
  about 5% of calls hedge, and never under ``MIN_DELAY`` (1 ms: hedging what is faster than
  that costs more than it saves). With no latency observed yet, attempts start only on failure.
  ``0`` starts every attempt at once.
- ``max_attempts``: attempts in all, the first included (2..10).
- ``budget``: hedges allowed per call (0..1; 0.1 = one hedge per ten calls), counted over the
  last ``BUDGET_TTL`` seconds like a retry budget, so a slow dependency is never hit with twice
  its load (gRPC's hedging throttle plays the same role).

Runtime: ``HedgeThrottle(config)``, one per dependency:

- ``delay(p95: float | None) -> float``: the delay to use (``math.inf``: only on failure);
- ``on_call(now)``: once per caller call (earns ``budget`` of a hedge);
- ``try_hedge(now) -> bool``: before each extra attempt; ``False`` means the budget is spent
  (count ``budget_exhausted``) and no more attempts start for this call.

Execution: ``await run_hedged(attempt, delay=..., max_attempts=..., allow=..., on_event=...)``
(asyncio) and ``run_hedged_sync(submit, ...)`` (threads) share one decision core, ``Race``.
Attempt 1 starts at once; the next starts after ``delay`` or as soon as an attempt fails (as
Polly does); each extra attempt first asks ``allow()``. The first attempt to succeed wins; if
all fail, the first attempt's error is raised. ``on_event`` receives ``"sent"`` for each extra
attempt started, ``"won"`` when an extra attempt won, ``"budget_exhausted"`` when ``allow``
refused (the names of ``resilience_hedges_total``'s outcomes).

Losers: asyncio tasks are cancelled *and awaited* before ``run_hedged`` returns, so nothing
outlives the call. Threads cannot be stopped: ``run_hedged_sync`` cancels each losing future
(a queued attempt never runs) and hands it to ``abandon(n, future)``, for the pipeline to
account like a timed-out worker. An attempt raising a ``BaseException`` that is not an
``Exception`` (cancellation, KeyboardInterrupt) ends the race and propagates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import attrs

from ..errors import ConfigError
from ._budget import SCALE, Ledger
from ._checks import check_seconds, count, number

__all__ = [
    "BUDGET_TTL",
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_ATTEMPTS",
    "MIN_DELAY",
    "Hedge",
    "HedgeThrottle",
    "Race",
    "run_hedged",
    "run_hedged_sync",
]

T = TypeVar("T")
F = TypeVar("F")

DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_BUDGET = 0.1
MIN_DELAY = 0.001
BUDGET_TTL = 10.0
MAX_ATTEMPTS = 10  # Polly's bound on hedged attempts


def _delay(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        check_seconds(attribute.name, value, positive=False)


@attrs.frozen(kw_only=True)
class Hedge:
    """Hedging for one dependency (see the module docstring).

    Args:
        delay: seconds before the next attempt starts; ``None`` (default) follows the observed
            p95 latency; ``0`` starts all attempts at once.
        max_attempts: attempts in all, the first included (2..10).
        budget: extra attempts allowed per call, over the last 10 s (0..1).
    """

    delay: float | None = attrs.field(default=None, validator=_delay)
    max_attempts: int = attrs.field(
        default=DEFAULT_MAX_ATTEMPTS, validator=count(low=2, high=MAX_ATTEMPTS)
    )
    budget: float = attrs.field(default=DEFAULT_BUDGET, validator=number(low=0.0, high=1.0))


class HedgeThrottle:
    """The runtime of one ``Hedge``: the delay rule and the budget, shared by every caller."""

    __slots__ = ("_earn", "_ledger", "config")

    def __init__(self, config: Hedge) -> None:
        if not isinstance(config, Hedge):
            raise ConfigError("hedge", f"must be a resilience.Hedge, got {config!r}")
        self.config = config
        self._earn = round(config.budget * SCALE)
        self._ledger = Ledger(BUDGET_TTL, reserve=0)

    def delay(self, p95: float | None) -> float:
        """Seconds before the next attempt: the configured delay, else ``max(p95, MIN_DELAY)``;
        ``math.inf`` (start only on failure) while no latency has been observed."""
        if self.config.delay is not None:
            return self.config.delay
        if p95 is None:
            return math.inf
        return p95 if p95 > MIN_DELAY else MIN_DELAY

    def on_call(self, now: float) -> None:
        """One caller call: earns ``budget`` of a hedge."""
        if self._earn:
            self._ledger.put(now, self._earn)

    def try_hedge(self, now: float) -> bool:
        """Spend one hedge; ``False`` (nothing spent) when the budget is exhausted."""
        return self._ledger.try_get(now, SCALE)

    def available(self, now: float) -> float:
        """Hedges the budget allows at ``now``."""
        return max(0, self._ledger.balance(now)) / SCALE


def _always() -> bool:
    return True


class Race:
    """The decisions of one hedged call, shared by the asyncio and thread drivers."""

    __slots__ = ("_allow", "_errors", "_on_event", "max_attempts", "running", "started", "stopped")

    def __init__(
        self,
        max_attempts: int,
        allow: Callable[[], bool],
        on_event: Callable[[str], None] | None,
    ) -> None:
        self.max_attempts = max_attempts
        self._allow = allow
        self._on_event = on_event
        self.started = 0
        self.running = 0
        self.stopped = False  # the budget refused: no more attempts for this call
        self._errors: dict[int, Exception] = {}

    def _emit(self, event: str) -> None:
        if self._on_event is not None:
            self._on_event(event)

    @property
    def can_start(self) -> bool:
        return self.started < self.max_attempts and not self.stopped

    def start(self) -> int | None:
        """The number of the attempt to start now, or ``None`` (none left, or refused)."""
        if not self.can_start:
            return None
        if self.started:
            if not self._allow():
                self.stopped = True
                self._emit("budget_exhausted")
                return None
            self._emit("sent")
        self.started += 1
        self.running += 1
        return self.started

    def failed(self, n: int, error: Exception) -> None:
        self.running -= 1
        self._errors[n] = error

    def won(self, n: int) -> None:
        self.running -= 1
        if n > 1:
            self._emit("won")

    def error(self) -> Exception:
        """The error to raise once every attempt failed: the first attempt's."""
        return self._errors[min(self._errors)]


def _in_order(done: Iterable[F], number: dict[F, int]) -> list[F]:
    return sorted(done, key=number.__getitem__)


async def run_hedged(
    attempt: Callable[[int], Awaitable[T]],
    *,
    delay: float,
    max_attempts: int,
    allow: Callable[[], bool] = _always,
    on_event: Callable[[str], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """Run ``attempt(n)`` (n = 1, 2, ...) hedged; losers are cancelled and awaited.

    Args:
        attempt: one protected attempt; called with the attempt's number.
        delay: seconds from one attempt's start to the next one's (``math.inf``: on failure
            only; ``<= 0``: all at once).
        max_attempts: attempts in all.
        allow: asked before each extra attempt (the budget); ``False`` stops hedging.
        on_event: receives ``"sent"``, ``"won"`` and ``"budget_exhausted"``.
        sleep: waits out the delay (tests pass a controllable one).
    """
    race = Race(max_attempts, allow, on_event)
    tasks: dict[asyncio.Future[T], int] = {}
    timer: asyncio.Future[Any] | None = None
    timed = 0 < delay < math.inf

    def launch() -> bool:
        n = race.start()
        if n is None:
            return False
        tasks[asyncio.ensure_future(attempt(n))] = n
        return True

    launch()
    if delay <= 0:
        while launch():
            pass
    try:
        while True:
            if timer is None and timed and race.can_start:
                timer = asyncio.ensure_future(sleep(delay))
            waiting: set[asyncio.Future[Any]] = set(tasks)
            if timer is not None:
                waiting.add(timer)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            fire = False
            if timer is not None and timer in done:
                timer = None
                fire = True
            for task in _in_order(done.intersection(tasks), tasks):
                n = tasks.pop(task)
                error = None if task.cancelled() else task.exception()
                if task.cancelled() or not (error is None or isinstance(error, Exception)):
                    task.result()  # re-raises the cancellation or the BaseException
                if error is None:
                    race.won(n)
                    value: T = task.result()
                    return value
                assert isinstance(error, Exception)
                race.failed(n, error)
                fire = True
            if fire and launch() and timer is not None:
                timer.cancel()  # the delay counts from the newest attempt
                timer = None
            if not tasks:
                raise race.error()
    finally:
        losers: list[asyncio.Future[Any]] = list(tasks)
        if timer is not None:
            losers.append(timer)
        for loser in losers:
            loser.cancel()
        if losers:
            await asyncio.wait(losers)


def run_hedged_sync(
    submit: Callable[[int], concurrent.futures.Future[T]],
    *,
    delay: float,
    max_attempts: int,
    allow: Callable[[], bool] = _always,
    on_event: Callable[[str], None] | None = None,
    abandon: Callable[[int, concurrent.futures.Future[T]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    wait: Callable[..., Any] = concurrent.futures.wait,
) -> T:
    """Run attempts hedged on threads: ``submit(n)`` starts attempt ``n`` elsewhere (a pool)
    and returns its future; this thread only waits. Losers are cancelled if still queued and
    handed to ``abandon(n, future)``.

    ``clock`` and ``wait`` (``concurrent.futures.wait``'s signature) are injectable for tests.
    Other arguments as for ``run_hedged``.
    """
    race = Race(max_attempts, allow, on_event)
    futures: dict[concurrent.futures.Future[T], int] = {}
    timed = 0 < delay < math.inf

    def launch() -> bool:
        n = race.start()
        if n is None:
            return False
        futures[submit(n)] = n
        return True

    launch()
    if delay <= 0:
        while launch():
            pass
    next_at = clock() + delay if timed else math.inf
    try:
        while True:
            timeout = None
            if timed and race.can_start:
                timeout = max(0.0, next_at - clock())
            done, _ = wait(
                set(futures), timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED
            )
            fire = not done
            for future in _in_order(done, futures):
                n = futures.pop(future)
                if future.cancelled():  # by the pool, not by us: a failed attempt
                    error: BaseException | None = concurrent.futures.CancelledError()
                else:
                    error = future.exception()
                if error is None:
                    race.won(n)
                    value: T = future.result()
                    return value
                if not isinstance(error, Exception):
                    raise error
                race.failed(n, error)
                fire = True
            if fire and launch() and timed:
                next_at = clock() + delay
            if not futures:
                raise race.error()
    finally:
        for future, n in futures.items():
            future.cancel()
            if abandon is not None:
                abandon(n, future)
