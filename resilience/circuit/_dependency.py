"""A dependency: what every call to one named dependency shares.

One ``Dependency`` per key holds the policy, the breaker, the rolling window, the limits (the
semaphore permits, the thread pool, an adaptive concurrency limit and a token bucket when the
policy asks for them), the retry and hedge budgets shared by its call sites, the experiments
touching it (``_shadow``) and the per-loop coroutine deadlines. Calls run through it in the
pipeline of ``_sync`` / ``_async``; ``Recorder`` (``_record``) records what they end in.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs

from ..errors import ConfigError
from ._adaptive import AdaptiveLimiter
from ._breaker import Breaker, State
from ._bulkhead import ConcurrencyLimit, Permits, ThreadBulkhead
from ._fallback import MISSING
from ._guard import Guard
from ._hedge import Hedge
from ._load import HEDGE_OUTCOMES, LoadControl, LoadState
from ._policy import Policy
from ._ratelimit import TokenBucket
from ._record import Listener, Recorder
from ._retry import Retry
from ._shadow import Experiments
from ._ticket import Ticket
from ._ticket import begin as _begin
from ._timeout import Deadlines
from ._window import RETRIED, RollingWindow

__all__ = ["HEDGE_OUTCOMES", "Dependency", "Listener", "Ticket"]

T = TypeVar("T")

_CLOSED = State.CLOSED
PROBATION_CALLS = 100
LOOP_CHECK_AFTER = 0.0001  # seconds: a shorter sync call cannot hold an event loop up


def _is_coroutine_function(fn: Any) -> bool:
    # A callable object with an ``async def __call__`` counts as a coroutine function too.
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


class Dependency(Recorder, LoadControl):
    """Everything calls to one named dependency share: policy, breaker, limits, statistics.

    Get one from the registry (``resilience.registry().dependency(name, ...)``) or through
    ``protect``. ``call(fn, *args, **kwargs)`` and ``await acall(fn, *args, **kwargs)`` run a
    function through it without decorating; ``guard(fallback=..., ignore=..., retry=...,
    deadline=...)`` adds what belongs to one call site.

    A sync function under ``isolation="semaphore"`` runs on the caller's thread and cannot be
    preempted: when it returns after ``timeout`` it is recorded as a timeout and the caller gets
    ``CallTimeoutError`` (or the fallback), so slow calls still trip the circuit.
    """

    def __init__(
        self,
        name: str,
        policy: Policy,
        clock: Callable[[], float] = time.perf_counter,
        listeners: list[Listener] | None = None,
    ) -> None:
        self.name = name
        self.declared_policy = policy
        self.declared = True  # False while only looked up, see Registry.dependency
        self.policy = policy
        self._clock = clock
        self._sleep: Callable[[float], object] = time.sleep
        self._asleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._listeners: list[Listener] = []
        self._shared_listeners = listeners if listeners is not None else []
        self.window = RollingWindow(policy.window, policy.buckets, clock, policy.slow_call_duration)
        self.breaker = Breaker(name, policy, self.window, self._emit, self._refresh)
        self.permits = Permits(policy.max_concurrent)
        # Load control, from the policy (_build_limits): the concurrency limit coroutines and
        # semaphore calls take (the permits, or an adaptive limit that the pool follows too),
        # the token bucket, and the budgets shared by call sites (by their config).
        self._limiter: ConcurrencyLimit = self.permits
        self.adaptive: AdaptiveLimiter | None = None
        self._rate_limiter: TokenBucket | None = None
        self._load = LoadState()  # budgets, hedge counts, the observed p95 (_load)
        self.experiments = Experiments()
        self._pool: ThreadBulkhead | None = None
        self._pool_lock = threading.Lock()
        self._dl_loop: asyncio.AbstractEventLoop | None = None
        self._dl: Deadlines | None = None
        self._deadlines: dict[asyncio.AbstractEventLoop, Deadlines] = {}
        self._loop_warned = False
        self._probation = PROBATION_CALLS
        self.lane = True
        self.rated: TokenBucket | None = None
        self.fast_limit = 0.0
        self._build_limits(None)
        self.window.peak_probe = self._take_peak
        self._default_guard = Guard(self)
        _live.add(self)

    def __repr__(self) -> str:
        return f"<Dependency {self.name!r} {self.breaker.state.value}>"

    # -- public surface -------------------------------------------------------------------

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a sync function through this dependency (no fallback)."""
        return self._default_guard.call(fn, None, args, kwargs)  # type: ignore[no-any-return]

    async def acall(
        self, fn: Callable[..., Awaitable[T]] | Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through this dependency (no fallback).

        A coroutine function runs on the caller's task under ``max_concurrent`` and is
        cancelled at the timeout; a sync function runs in the dependency's thread pool (created
        on first use, whatever the isolation), so it never blocks the event loop, and the
        caller stops waiting at the timeout.
        """
        guard = self._default_guard
        if _is_coroutine_function(fn):
            return await guard.acall(fn, None, args, kwargs)  # type: ignore[arg-type, no-any-return]
        return await guard.acall_sync(fn, args, kwargs)  # type: ignore[no-any-return]

    def guard(
        self,
        *,
        fallback: Any = MISSING,
        ignore: Any = (),
        retry: Retry | None = None,
        deadline: float | None = None,
        hedge: Hedge | None = None,
    ) -> Guard:
        """A call site's view of this dependency: fallback, ignored errors, retry, deadline,
        hedge."""
        return Guard(
            self, fallback=fallback, ignore=ignore, retry=retry, deadline=deadline, hedge=hedge
        )

    # Admit one call the caller runs itself (``_ticket.begin``: FIT, breaker, rate limit,
    # concurrency limit); the caller ends the ticket exactly once. A plain function made a
    # method, not a wrapper: a cache zone's every operation takes this path.
    begin = _begin

    @property
    def state(self) -> State:
        return self.breaker.state

    @property
    def pool(self) -> ThreadBulkhead | None:
        """The thread pool, once a sync function is protected under thread isolation."""
        return self._pool

    @property
    def retries(self) -> int:
        """Retries made so far (attempts after a caller's first)."""
        return self.window.totals().counts[RETRIED]

    def peak_concurrency(self) -> int:
        """The most calls in flight at once during the rolling window, whatever the isolation
        (coroutines and semaphore calls holding permits, plus pool workers running a call)."""
        return self.window.peak()

    def on_state_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(StateChange)`` on every transition; returns its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def force_open(self) -> None:
        self.breaker.force(State.FORCED_OPEN, self._clock())

    def force_closed(self) -> None:
        self.breaker.force(State.FORCED_CLOSED, self._clock())

    def reset(self) -> None:
        """Back to a closed circuit with a fresh window (clears forced states)."""
        self.breaker.force(None, self._clock())

    def update_policy(self, **changes: Any) -> Policy:
        """Apply new policy values at runtime (flags); returns the policy now in force.

        Timeouts, rates, window shape, open duration, trial count, pool and semaphore sizes
        change for the next call. Isolation cannot change at runtime.
        """
        new = Policy.build(self.policy, **changes)
        if new.isolation != self.policy.isolation:
            raise ConfigError("isolation", "cannot change at runtime")
        old, self.policy = self.policy, new
        self._build_limits(old)
        if (old.window, old.buckets, old.slow_call_duration) != (
            new.window,
            new.buckets,
            new.slow_call_duration,
        ):
            self.window.resize(new.window, new.buckets, new.slow_call_duration)
        self.breaker.policy = new
        if new.max_concurrent != old.max_concurrent:
            self.permits.resize(new.max_concurrent)
        if self._pool is not None and (new.pool_size, new.queue_size) != (
            old.pool_size,
            old.queue_size,
        ):
            self._pool.resize(new.pool_size, new.queue_size)
        self._refresh()
        return new

    def adopt(self, policy: Policy) -> None:
        """Take ``policy`` as the declared one (a dependency created by a bare lookup)."""
        with self._pool_lock:
            if self._pool is None and policy.isolation != self.policy.isolation:
                self.policy = attrs.evolve(self.policy, isolation=policy.isolation)
        self.update_policy(**attrs.asdict(policy, recurse=False))
        self.declared_policy = policy
        self.declared = True

    def set_clock(
        self, clock: Callable[[], float], sleep: Callable[[float], object] | None = None
    ) -> None:
        """Read time from ``clock`` from now on (tests); starts a fresh window.

        ``sleep`` replaces ``time.sleep`` for waits the library makes itself (retry back-off,
        waiting for a rate-limit token); with a fake clock, pass its ``advance`` so those waits
        move it instead of stalling the test. Coroutines get the same, as an ``asyncio.sleep(0)``
        after it. None: real sleeps.
        """
        self._clock = clock
        self.window._clock = clock
        self.window.resize(self.policy.window, self.policy.buckets, self.policy.slow_call_duration)
        # Budgets, buckets and experiments keep times of the old clock: start them afresh.
        hedges = self._load.hedges
        self._load = LoadState()
        self._load.hedges = hedges  # counters are cumulative: they survive a clock change
        self.experiments.clear()
        if self.policy.rate_limit is not None:
            self.rate_limiter = TokenBucket(self.policy.rate_limit, clock)
        if sleep is None:
            self._sleep, self._asleep = time.sleep, asyncio.sleep
        else:
            fake = sleep

            async def asleep(seconds: float) -> None:
                fake(seconds)
                await asyncio.sleep(0)

            self._sleep, self._asleep = fake, asleep

    # -- pipeline slots -------------------------------------------------------------------

    @property
    def limiter(self) -> ConcurrencyLimit:
        """The concurrency limit of coroutines and semaphore-isolated calls (the permits)."""
        return self._limiter

    @limiter.setter
    def limiter(self, limit: ConcurrencyLimit | None) -> None:
        self._limiter = self.permits if limit is None else limit
        self._refresh()

    @property
    def rate_limiter(self) -> TokenBucket | None:
        """The token bucket calls take from before the concurrency limit (None: no limit)."""
        return self._rate_limiter

    @rate_limiter.setter
    def rate_limiter(self, bucket: TokenBucket | None) -> None:
        self._rate_limiter = bucket
        self._refresh()

    def _refresh(self) -> None:
        # ``lane``: the decorator's fast path may serve the next call (closed circuit, fixed
        # bulkhead, no rate limit, first calls made). ``fast_limit``: the latency below which
        # a sync fast-path call is a plain success (neither slow nor past its timeout, nor long
        # enough to matter if it held up an event loop).
        plain = (
            self.breaker.state is _CLOSED and self._limiter is self.permits and self._probation <= 0
        )
        self.lane = plain and self._rate_limiter is None
        # ``rated``: the same, with a token bucket the fast path takes from itself.
        self.rated = self._rate_limiter if plain else None
        slow = self.policy.slow_call_duration
        limit = min(self.policy.timeout, LOOP_CHECK_AFTER)
        self.fast_limit = limit if slow is None else min(slow, limit)

    def _first_calls(self, calls: int = 1) -> None:
        # The first PROBATION_CALLS calls take the general path, which checks every sync call
        # for a running event loop; later, the fast path checks only calls that took
        # LOOP_CHECK_AFTER or more (one check per call costs 6% of a protected call).
        self._probation -= calls
        if self._probation <= 0:
            self._refresh()

    # -- internals ------------------------------------------------------------------------

    def _take_peak(self) -> int:
        peak = self.permits.take_peak()
        pool = self._pool
        if pool is not None:
            peak += pool.take_peak()
        if self._limiter is not self.permits:
            peak += self._limiter.in_use
        return peak

    def _capacity(self, pooled: bool) -> int:
        """Permits of the limit an attempt holds: the thread pool's (threads and queue) for a
        call run in it (``pooled``), else the semaphore's or the adaptive limit's."""
        if pooled:
            return (self._pool or self._thread_pool()).permits.limit
        return self._limiter.limit

    def _thread_pool(self) -> ThreadBulkhead:
        with self._pool_lock:
            if self._pool is None:
                p = self.policy
                self._pool = ThreadBulkhead(self.name, p.pool_size, p.queue_size)
                if self.adaptive is not None:
                    self._pool.follow(self.adaptive)
            return self._pool

    def _deadlines_for(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        dl = self._deadlines.get(loop)
        if dl is None:
            dl = self._deadlines[loop] = Deadlines(loop)
            if len(self._deadlines) > 8:  # loops come and go in tests; keep only live ones
                for old in [lp for lp in self._deadlines if lp.is_closed()]:
                    del self._deadlines[old]
        self._dl_loop, self._dl = loop, dl
        return dl

    def _reset_after_fork(self) -> None:
        # In a forked child only the forking thread exists: calls other threads had in flight
        # never finish there, so their permits, trial slots and held locks are dropped.
        self.permits.reset_after_fork()
        if self.adaptive is not None:
            self.adaptive.reset_after_fork()
        self.experiments.clear()
        self._load.lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._deadlines.clear()
        self._dl_loop = self._dl = None
        self.window._lock = threading.Lock()
        self.breaker.reset_after_fork()


_live: weakref.WeakSet[Dependency] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for dep in list(_live):
        dep._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
