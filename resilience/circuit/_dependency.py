"""A dependency: one breaker, one bulkhead, one window, and the drivers that run calls through them.

The decisions (may this call run? what did its outcome change?) live in ``Breaker`` and
``RollingWindow``; this module only waits, acquires and calls. Sync and async drivers differ in
how they wait: a sync call waits on its worker's lock with a timeout, a coroutine is cancelled
by a per-loop deadline queue (one timer per dependency, not one per call).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import tenacity

from ..context import FIT
from ..errors import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    FallbackFailedError,
)
from ._breaker import REJECT, RUN, Breaker, State, StateChange
from ._bulkhead import Permits, ThreadBulkhead
from ._policy import Policy, Retry
from ._window import (
    FAILURE,
    FALLBACK_FAILURE,
    FALLBACK_SUCCESS,
    IGNORED,
    REJECTED,
    SHORT_CIRCUITED,
    SUCCESS,
    TIMEOUT,
    RollingWindow,
)

__all__ = ["MISSING", "Dependency", "Guard", "Listener", "Ticket"]

log = logging.getLogger("resilience.circuit")

T = TypeVar("T")
Listener = Callable[[StateChange], None]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_CLOSED = State.CLOSED
_LIVE, _DONE, _EXPIRED = 0, 1, 2


class _Deadlines:
    """Cancels tasks whose deadline passed, with one loop timer per dependency and loop.

    Deadlines of one dependency arrive in order (same timeout), so a deque is a priority queue;
    an entry whose deadline is earlier than the last one (the timeout was lowered at runtime)
    gets a timer of its own. Invariant: while the queue holds entries, the timer is due no
    later than the first one.
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
        q = self._q
        while q and q[0][2] == _DONE:
            q.popleft()
        deadline = self._now() + timeout
        entry: list[Any] = [deadline, task, _LIVE]
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
        """Deadlines still armed (calls in flight)."""
        return sum(1 for entry in self._q if entry[2] == _LIVE)

    @staticmethod
    def _expire(entry: list[Any]) -> None:
        if entry[2] == _LIVE and entry[1] is not None:
            entry[2] = _EXPIRED
            entry[1].cancel()

    def _fire(self) -> None:
        self._handle = None
        q = self._q
        now = self._loop.time()
        while q:
            entry = q[0]
            if entry[2] != _LIVE:
                q.popleft()
            elif entry[0] <= now:
                q.popleft()
                self._expire(entry)
            else:
                self._handle = self._loop.call_at(entry[0], self._fire)
                self._when = entry[0]
                return


class Dependency:
    """Everything calls to one named dependency share: policy, breaker, bulkhead, statistics.

    Get one from the registry (``resilience.registry().dependency(name, ...)``) or through
    ``protect``. ``call(fn, *args, **kwargs)`` and ``await acall(fn, *args, **kwargs)`` run a
    function through it without decorating; ``guard(fallback=..., ignore=..., retry=...)`` adds
    what belongs to one call site.

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
        self._listeners: list[Listener] = []
        self._shared_listeners = listeners if listeners is not None else []
        self.window = RollingWindow(policy.window, policy.buckets, clock, policy.slow_call_duration)
        self.breaker = Breaker(name, policy, self.window, self._emit)
        self.permits = Permits(policy.max_concurrent)
        self._pool: ThreadBulkhead | None = None
        self._pool_lock = threading.Lock()
        self._dl_loop: asyncio.AbstractEventLoop | None = None
        self._dl: _Deadlines | None = None
        self._deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}
        self.retries = 0
        self._default_guard = Guard(self)
        _live.add(self)

    def _reset_after_fork(self) -> None:
        # In a forked child only the forking thread exists: calls other threads had in flight
        # never finish there, so their permits, trial slots and held locks are dropped.
        self.permits.reset_after_fork()
        self._pool_lock = threading.Lock()
        self._deadlines.clear()
        self._dl_loop = self._dl = None
        self.window._lock = threading.Lock()
        self.breaker.reset_after_fork()

    def __repr__(self) -> str:
        return f"<Dependency {self.name!r} {self.breaker.state.value}>"

    # -- public surface -------------------------------------------------------------------

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a sync function through this dependency (no fallback)."""
        return self._default_guard.call(fn, None, args, kwargs)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Run a coroutine function through this dependency (no fallback)."""
        return await self._default_guard.acall(fn, None, args, kwargs)  # type: ignore[no-any-return]

    def guard(
        self,
        *,
        fallback: Any = MISSING,
        ignore: tuple[type[BaseException], ...] = (),
        retry: Retry | None = None,
    ) -> Guard:
        """A call site's view of this dependency: its own fallback, ignored errors and retry."""
        return Guard(self, fallback=fallback, ignore=ignore, retry=retry)

    def begin(self) -> Ticket:
        """Admit one call that the caller runs itself, outside ``call``/``acall``.

        For IO the library cannot wrap in one function, such as a write pipelined to several
        servers from one thread: send everything, then read every reply. This is
        resilience4j's acquire / onSuccess / onError split. ``begin`` asks the active FIT
        recipe (``ticket.fault``: apply it with ``fault.wrap_sync(fn, timeout)``), the breaker
        (``CircuitOpenError``) and the semaphore permits (``BulkheadFullError``); the caller
        must end the ticket exactly once with ``success()``, ``failure(exc)``, ``timeout()`` or
        ``cancel()``, and enforces ``policy.timeout`` itself (socket timeouts).
        """
        fault = None
        fit = FIT.get()
        if fit is not None:
            fault = fit.fault_for(self.name)
        clock = self._clock
        decision = RUN
        if self.breaker.state is not _CLOSED:
            decision = self.breaker.acquire(clock())
            if decision == REJECT:
                raise self._short_circuit(clock())
        if not self.permits.try_take():
            raise self._reject(decision, self.permits.limit)
        return Ticket(self, decision, clock(), fault)

    @property
    def state(self) -> State:
        return self.breaker.state

    @property
    def pool(self) -> ThreadBulkhead | None:
        """The thread pool, once a sync call under thread isolation has created it."""
        return self._pool

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
        return new

    def adopt(self, policy: Policy) -> None:
        """Take ``policy`` as the declared one (a dependency created by a bare lookup)."""
        with self._pool_lock:
            if self._pool is None and policy.isolation != self.policy.isolation:
                self.policy = attrs.evolve(self.policy, isolation=policy.isolation)
        self.update_policy(**attrs.asdict(policy))
        self.declared_policy = policy
        self.declared = True

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` from now on (tests); starts a fresh window."""
        self._clock = clock
        self.window._clock = clock
        self.window.resize(self.policy.window, self.policy.buckets, self.policy.slow_call_duration)

    # -- internals shared by the drivers --------------------------------------------------

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

    def _short_circuit(self, now: float) -> CircuitOpenError:
        self.window.record(SHORT_CIRCUITED, now)
        br = self.breaker
        err = CircuitOpenError(self.name, br.state.value, br.retry_after(now))
        err.__cause__ = br.last_error
        return err

    def _reject(self, decision: int, limit: int) -> BulkheadFullError:
        self.breaker.release(decision)
        self.window.record(REJECTED, self._clock())
        return BulkheadFullError(self.name, limit)

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

    def _failure(
        self,
        decision: int,
        err: BaseException,
        latency: float,
        now: float,
        ignore: tuple[type[BaseException], ...],
    ) -> None:
        if ignore and isinstance(err, ignore):
            self.window.record(IGNORED, now)
            self.breaker.release(decision)
            return
        self.window.record_call(FAILURE, latency, now)
        self.breaker.on_result(decision, False, now, err)

    def _timeout(self, decision: int, latency: float, now: float) -> CallTimeoutError:
        err = CallTimeoutError(self.name, self.policy.timeout)
        self.window.record_call(TIMEOUT, latency, now)
        self.breaker.on_result(decision, False, now, err)
        return err

    def _thread_pool(self) -> ThreadBulkhead:
        with self._pool_lock:
            if self._pool is None:
                p = self.policy
                self._pool = ThreadBulkhead(self.name, p.pool_size, p.queue_size)
            return self._pool

    def _deadlines_for(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        dl = self._deadlines.get(loop)
        if dl is None:
            dl = self._deadlines[loop] = _Deadlines(loop)
            if len(self._deadlines) > 8:  # loops come and go in tests; keep only live ones
                for old in [lp for lp in self._deadlines if lp.is_closed()]:
                    del self._deadlines[old]
        self._dl_loop, self._dl = loop, dl
        return dl

    # -- one attempt: sync ----------------------------------------------------------------

    def _run_sync(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ignore: tuple[type[BaseException], ...],
    ) -> Any:
        clock = self._clock
        decision = RUN
        if self.breaker.state is not _CLOSED:
            decision = self.breaker.acquire(clock())
            if decision == REJECT:
                raise self._short_circuit(clock())
        policy = self.policy
        if policy.isolation == "semaphore":
            permits = self.permits
            if not permits.try_take():
                raise self._reject(decision, permits.limit)
            start = clock()
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                permits.give()
                now = clock()
                self._failure(decision, err, now - start, now, ignore)
                raise
            except BaseException:  # no outcome to decide, but nothing may stay taken
                permits.give()
                self.breaker.release(decision)
                raise
            permits.give()
            now = clock()
            if now - start > policy.timeout:
                raise self._timeout(decision, now - start, now)
            self._success(decision, now - start, now)
            return result

        pool = self._pool or self._thread_pool()
        if not pool.permits.try_take():
            raise self._reject(decision, pool.permits.limit)
        start = clock()
        job = None
        try:
            job = pool.submit(fn, args, kwargs)
            finished = job.done.acquire(timeout=policy.timeout)
        except BaseException:  # e.g. Ctrl-C while waiting: the worker finishes on its own
            if job is None:
                pool.permits.give()
            else:
                pool.abandon(job)
            self.breaker.release(decision)
            raise
        if finished:
            now = clock()
            error = job.error
            if error is None:
                self._success(decision, now - start, now)
                return job.result
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit...
                self.breaker.release(decision)
                raise error
            self._failure(decision, error, now - start, now, ignore)
            raise error
        pool.abandon(job)
        now = clock()
        raise self._timeout(decision, now - start, now)

    # -- one attempt: async ---------------------------------------------------------------

    async def _run_async(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ignore: tuple[type[BaseException], ...],
    ) -> Any:
        clock = self._clock
        decision = RUN
        if self.breaker.state is not _CLOSED:
            decision = self.breaker.acquire(clock())
            if decision == REJECT:
                raise self._short_circuit(clock())
        permits = self.permits
        if not permits.try_take():
            raise self._reject(decision, permits.limit)
        loop = asyncio.get_running_loop()
        dl = self._dl if self._dl_loop is loop else self._deadlines_for(loop)
        task = asyncio.current_task()
        entry = dl.add(task, self.policy.timeout)  # type: ignore[union-attr]
        start = clock()
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            permits.give()
            if entry[2] != _EXPIRED:  # cancelled by someone else: not the dependency's fault
                entry[2] = _DONE
                self.breaker.release(decision)
                raise
            if task is not None:
                task.uncancel()
            now = clock()
            raise self._timeout(decision, now - start, now) from None
        except Exception as err:
            entry[2] = _DONE
            permits.give()
            now = clock()
            self._failure(decision, err, now - start, now, ignore)
            raise
        except BaseException:
            entry[2] = _DONE
            permits.give()
            self.breaker.release(decision)
            raise
        permits.give()
        now = clock()
        if entry[2] == _EXPIRED:  # the function swallowed our cancellation and returned
            if task is not None:
                task.uncancel()
            raise self._timeout(decision, now - start, now)
        entry[2] = _DONE
        self._success(decision, now - start, now)
        return result


_live: weakref.WeakSet[Dependency] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for dep in list(_live):
        dep._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class Ticket:
    """One call admitted by ``Dependency.begin``; end it exactly once."""

    __slots__ = ("_decision", "_dependency", "_ended", "_start", "fault")

    def __init__(self, dependency: Dependency, decision: int, start: float, fault: Any) -> None:
        self._dependency = dependency
        self._decision = decision
        self._start = start
        self._ended = False
        self.fault = fault

    def _end(self) -> tuple[Dependency, float, float]:
        if self._ended:
            raise RuntimeError("a Ticket is ended exactly once")
        self._ended = True
        dep = self._dependency
        dep.permits.give()
        now = dep._clock()
        return dep, now - self._start, now

    def success(self) -> None:
        dep, latency, now = self._end()
        dep._success(self._decision, latency, now)

    def failure(self, error: Exception, ignore: tuple[type[BaseException], ...] = ()) -> None:
        dep, latency, now = self._end()
        dep._failure(self._decision, error, latency, now, ignore)

    def timeout(self) -> CallTimeoutError:
        """Record a timeout; returns the ``CallTimeoutError`` to raise."""
        dep, latency, now = self._end()
        return dep._timeout(self._decision, latency, now)

    def cancel(self) -> None:
        """The call never ran (the caller gave up before sending): record nothing."""
        dep, _, _ = self._end()
        dep.breaker.release(self._decision)


def _retryable(
    retry: Retry, ignore: tuple[type[BaseException], ...]
) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, (CircuitOpenError, BulkheadFullError, FallbackFailedError)):
            return False
        if ignore and isinstance(exc, ignore):
            return False
        return isinstance(exc, retry.on)

    return check


class Guard:
    """One call site of a dependency: the dependency plus fallback, ignored errors and retry.

    The success path does not touch tenacity; it is engaged only after a first failure that
    the retry policy covers, and then replays that failure as its first attempt so attempt
    numbers and waits are exactly tenacity's.
    """

    __slots__ = ("_retryable", "dependency", "fallback", "ignore", "retry")

    def __init__(
        self,
        dependency: Dependency,
        *,
        fallback: Any = MISSING,
        ignore: Any = (),
        retry: Any = None,
    ) -> None:
        if not isinstance(ignore, tuple):
            ignore = tuple(ignore) if not isinstance(ignore, type) else (ignore,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in ignore):
            raise ConfigError("ignore", f"must be exception types, got {ignore!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigError("retry", f"must be a resilience.Retry, got {retry!r}")
        self.dependency = dependency
        self.fallback = fallback
        self.ignore = ignore
        self.retry = retry
        self._retryable = (
            _retryable(retry, ignore) if retry is not None and retry.attempts > 1 else None
        )

    # sync

    def call(
        self, fn: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``fn(*args, **kwargs)``; the signature is wrapt's, so this is the decorator."""
        dep = self.dependency
        fit = FIT.get()
        if fit is not None:
            fault = fit.fault_for(dep.name)
            if fault is not None:
                fn = fault.wrap_sync(fn, dep.policy.timeout)
        try:
            return dep._run_sync(fn, args, kwargs, self.ignore)
        except Exception as exc:
            return self._recover(exc, fn, args, kwargs)

    def _failed(
        self,
        err: Exception,
        latency: float,
        now: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        self.dependency._failure(RUN, err, latency, now, self.ignore)
        return self._recover(err, fn, args, kwargs)

    def _late(
        self,
        result: Any,
        latency: float,
        now: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        # A semaphore-isolated call that returned slow (recorded as slow) or past its timeout.
        dep = self.dependency
        if latency > dep.policy.timeout:
            return self._recover(dep._timeout(RUN, latency, now), fn, args, kwargs)
        dep._success(RUN, latency, now)
        return result

    def fast_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A closure running ``fn`` through this guard, for the decorator.

        The closed-circuit, no-FIT success path of semaphore isolation is inlined here: one
        frame instead of four, no lock (permits and success latencies are lock-free lists).
        Every other case (circuit not closed, an active recipe, a full semaphore, a failure, a
        late or slow call) goes to the same core as ``call``.
        """
        dep = self.dependency
        general = self.call
        if dep.policy.isolation != "semaphore":

            def protected_pool(*args: Any, **kwargs: Any) -> Any:
                return general(fn, None, args, kwargs)

            return protected_pool

        breaker = dep.breaker
        window = dep.window
        permits = dep.permits
        free = permits._free
        fit_get = FIT.get
        failed = self._failed
        late = self._late

        def protected(*args: Any, **kwargs: Any) -> Any:
            if breaker.state is not _CLOSED or fit_get() is not None:
                return general(fn, None, args, kwargs)
            try:
                free.pop()
            except IndexError:
                return general(fn, None, args, kwargs)
            clock = dep._clock
            start = clock()
            try:
                result = fn(*args, **kwargs)
            except Exception as err:
                permits.give()
                now = clock()
                return failed(err, now - start, now, fn, args, kwargs)
            except BaseException:
                permits.give()
                raise
            if permits._debt:
                permits.give()
            else:
                free.append(0)
            now = clock()
            latency = now - start
            if latency < window.slow_call and latency <= dep.policy.timeout:
                window.add_success(latency, now)
                return result
            return late(result, latency, now, fn, args, kwargs)

        return protected

    def fast_async(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """The coroutine-function counterpart of ``fast_sync``: one coroutine frame on the
        closed-circuit success path; everything else goes to ``acall``'s core."""
        dep = self.dependency
        general = self.acall
        breaker = dep.breaker
        window = dep.window
        permits = dep.permits
        free = permits._free
        fit_get = FIT.get
        get_loop = asyncio.get_running_loop
        current_task = asyncio.current_task

        async def protected(*args: Any, **kwargs: Any) -> Any:
            if breaker.state is not _CLOSED or fit_get() is not None:
                return await general(fn, None, args, kwargs)
            try:
                free.pop()
            except IndexError:
                return await general(fn, None, args, kwargs)
            loop = get_loop()
            dl = dep._dl if dep._dl_loop is loop else dep._deadlines_for(loop)
            task = current_task()
            entry = dl.add(task, dep.policy.timeout)  # type: ignore[union-attr]
            clock = dep._clock
            start = clock()
            try:
                result = await fn(*args, **kwargs)
            except (Exception, asyncio.CancelledError) as err:
                return await self._afailed(err, entry, task, start, fn, args, kwargs)
            except BaseException:
                entry[2] = _DONE
                permits.give()
                raise
            if permits._debt:
                permits.give()
            else:
                free.append(0)
            now = clock()
            latency = now - start
            if entry[2] == _LIVE and latency < window.slow_call:
                entry[2] = _DONE
                window.add_success(latency, now)
                return result
            return await self._alate(result, entry, task, latency, now, fn, args, kwargs)

        return protected

    async def _afailed(
        self,
        err: BaseException,
        entry: list[Any],
        task: asyncio.Task[Any] | None,
        start: float,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        dep = self.dependency
        dep.permits.give()
        now = dep._clock()
        if isinstance(err, asyncio.CancelledError):
            if entry[2] != _EXPIRED:  # cancelled by someone else: not the dependency's fault
                entry[2] = _DONE
                raise err
            if task is not None:
                task.uncancel()
            exc: Exception = dep._timeout(RUN, now - start, now)
        else:
            entry[2] = _DONE
            assert isinstance(err, Exception)
            dep._failure(RUN, err, now - start, now, self.ignore)
            exc = err
        return await self._arecover(exc, fn, args, kwargs)

    async def _alate(
        self,
        result: Any,
        entry: list[Any],
        task: asyncio.Task[Any] | None,
        latency: float,
        now: float,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        dep = self.dependency
        if entry[2] == _EXPIRED:  # the function swallowed our cancellation and returned
            if task is not None:
                task.uncancel()
            return await self._arecover(dep._timeout(RUN, latency, now), fn, args, kwargs)
        entry[2] = _DONE
        dep._success(RUN, latency, now)
        return result

    def _recover(
        self, exc: Exception, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self.ignore and isinstance(exc, self.ignore):
            raise exc
        retryable = self._retryable
        if retryable is not None and retryable(exc):
            try:
                return self._retry_sync(exc, fn, args, kwargs, retryable)
            except Exception as last:
                exc = last
        return self._fallback(exc, args, kwargs)

    def _retrying(self, first: Exception, retryable: Callable[[BaseException], bool]) -> Any:
        """tenacity's settings for this guard, and a replay of the first failure as attempt 1."""
        assert self.retry is not None
        pending = [first]

        def replay_first() -> None:
            if pending:
                raise pending.pop()
            self.dependency.retries += 1

        settings = {
            "stop": tenacity.stop_after_attempt(self.retry.attempts),
            "wait": self.retry.wait,
            "retry": tenacity.retry_if_exception(retryable),
            "reraise": True,
        }
        return settings, replay_first

    def _retry_sync(
        self,
        first: Exception,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retryable: Callable[[BaseException], bool],
    ) -> Any:
        settings, replay_first = self._retrying(first, retryable)
        dep = self.dependency

        def attempt() -> Any:
            replay_first()
            return dep._run_sync(fn, args, kwargs, self.ignore)

        return tenacity.Retrying(**settings)(attempt)

    def _fallback_failed(self, exc: Exception, fb_exc: Exception) -> FallbackFailedError:
        dep = self.dependency
        dep.window.record(FALLBACK_FAILURE, dep._clock())
        return FallbackFailedError(dep.name, exc, fb_exc)

    def _fallback_served(self, value: Any) -> Any:
        dep = self.dependency
        dep.window.record(FALLBACK_SUCCESS, dep._clock())
        return value

    def _fallback(self, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fallback = self.fallback
        if fallback is MISSING:
            raise exc
        try:
            value = fallback(*args, **kwargs) if callable(fallback) else fallback
        except Exception as fb_exc:
            raise self._fallback_failed(exc, fb_exc) from fb_exc
        return self._fallback_served(value)

    # async

    async def acall(
        self,
        fn: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Await ``fn(*args, **kwargs)``; the signature is wrapt's, so this is the decorator."""
        dep = self.dependency
        fit = FIT.get()
        if fit is not None:
            fault = fit.fault_for(dep.name)
            if fault is not None:
                fn = fault.wrap_async(fn, dep.policy.timeout)
        try:
            return await dep._run_async(fn, args, kwargs, self.ignore)
        except Exception as exc:
            return await self._arecover(exc, fn, args, kwargs)

    async def _arecover(
        self,
        exc: Exception,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if self.ignore and isinstance(exc, self.ignore):
            raise exc
        retryable = self._retryable
        if retryable is not None and retryable(exc):
            try:
                return await self._retry_async(exc, fn, args, kwargs, retryable)
            except Exception as last:
                exc = last
        return await self._afallback(exc, args, kwargs)

    async def _retry_async(
        self,
        first: Exception,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        retryable: Callable[[BaseException], bool],
    ) -> Any:
        settings, replay_first = self._retrying(first, retryable)
        dep = self.dependency

        async def attempt() -> Any:
            replay_first()
            return await dep._run_async(fn, args, kwargs, self.ignore)

        return await tenacity.AsyncRetrying(**settings)(attempt)

    async def _afallback(
        self, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        fallback = self.fallback
        if fallback is MISSING:
            raise exc
        try:
            value = fallback(*args, **kwargs) if callable(fallback) else fallback
            if inspect.isawaitable(value):
                value = await value
        except Exception as fb_exc:
            raise self._fallback_failed(exc, fb_exc) from fb_exc
        return self._fallback_served(value)
