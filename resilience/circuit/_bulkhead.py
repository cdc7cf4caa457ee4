"""The concurrency-limit step: fixed bulkheads (semaphore permits, a bounded thread pool).

The step asks a limit for a permit before running a call and gives it back after, through a
small protocol that a fixed bulkhead and an adaptive limiter both implement:

```python
class ConcurrencyLimit(Protocol):
    limit: int                                   # calls admitted at once, now
    wait: float                                  # seconds a call may wait for a permit (0: none)
    in_use: int                                  # permits taken now
    def try_acquire(self) -> bool                # a permit without waiting
    def acquire(self, max_wait: float) -> bool   # waiting at most ``max_wait`` s (sync callers)
    async def acquire_async(self, max_wait: float) -> bool
    def release(self, latency: float, dropped: bool) -> None
    def give_back(self) -> None                  # a permit whose call taught nothing
```

``release`` gets the call's latency (seconds) and whether it was dropped (failed or timed out),
which is what an adaptive limit learns from; a fixed one ignores both. ``give_back`` returns a
permit without a sample: a call that never ran, or one whose latency a FIT fault made up. A call
refused a permit is not run: ``BulkheadFullError`` (``rejected``; ``LimitExceededError`` for an
adaptive limit) or the fallback.

Permits are a list of tokens: ``list.pop()`` and ``list.append()`` are atomic, so taking and
giving back a permit needs no lock and no Python-level semaphore (``threading.Semaphore`` costs
more than a whole protected call should). Fixed permits never wait (Hystrix's semantics).

The pool admits ``pool_size + queue_size`` calls; a permit is returned when the worker finishes
the call, not when the caller gives up. A caller that timed out leaves its worker *abandoned*
(Python cannot kill a thread): the worker keeps its permit until the function really returns, so
abandoned workers can never make the pool run more than ``pool_size`` calls at once. Whatever
the function raises, BaseExceptions included, goes to the caller and the worker lives on.

After ``os.fork()`` the child has none of the parent's worker threads and none of the calls that
held permits: every pool and permit set drops them there (``os.register_at_fork``), so the child
starts with empty pools, full permits and fresh locks.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol

__all__ = ["ConcurrencyLimit", "Job", "Permits", "ThreadBulkhead", "give"]

_QUEUED, _RUNNING, _DONE, _ABANDONED = 0, 1, 2, 3


class ConcurrencyLimit(Protocol):
    """What the concurrency-limit step asks of a limit (see the module docstring)."""

    @property
    def limit(self) -> int: ...

    @property
    def wait(self) -> float: ...

    @property
    def in_use(self) -> int: ...

    def try_acquire(self) -> bool: ...

    def acquire(self, max_wait: float) -> bool: ...

    async def acquire_async(self, max_wait: float) -> bool: ...

    def release(self, latency: float, dropped: bool) -> None: ...

    def give_back(self) -> None: ...


def give(limit: ConcurrencyLimit, sample: bool, latency: float, dropped: bool) -> None:
    """Give a permit back after the call ran: with its latency sample (``release``), or
    without one (``sample`` False: a FIT fault made the latency up)."""
    if sample:
        limit.release(latency, dropped)
    else:
        limit.give_back()


class Permits:
    """A fixed set of permits, taken and returned without a lock (a ``ConcurrencyLimit``)."""

    __slots__ = ("_debt", "_free", "_lock", "limit", "low")

    wait = 0.0  # a fixed bulkhead never waits

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = [0] * limit
        self._debt = 0  # permits to swallow as they come back after the limit shrank
        self._lock = threading.Lock()
        self.low = limit  # fewest free permits seen since the last ``take_peak``

    def try_take(self) -> bool:
        free = self._free
        try:
            free.pop()
        except IndexError:
            return False
        if len(free) < self.low:
            self.low = len(free)
        return True

    def give(self) -> None:
        if self._debt:
            with self._lock:
                if self._debt:
                    self._debt -= 1
                    return
        self._free.append(0)

    # ConcurrencyLimit
    try_acquire = try_take

    def acquire(self, max_wait: float) -> bool:
        return self.try_take()

    async def acquire_async(self, max_wait: float) -> bool:
        return self.try_take()

    def release(self, latency: float, dropped: bool) -> None:
        if self._debt:
            self.give()
        else:
            self._free.append(0)

    def give_back(self) -> None:
        self.give()

    @property
    def in_use(self) -> int:
        return self.limit + self._debt - len(self._free)

    def take_peak(self) -> int:
        """Most permits in use at once since the last call of this (then starts over)."""
        free = len(self._free)
        peak = self.limit + self._debt - min(self.low, free)
        self.low = free
        return peak

    def reset_after_fork(self) -> None:
        """Every permit free again: the calls that held them live in the parent only."""
        self._lock = threading.Lock()
        self._debt = 0
        self._free[:] = [0] * self.limit  # in place: fast paths hold this very list
        self.low = self.limit

    def resize(self, limit: int) -> None:
        """Change the limit; calls already admitted keep their permits until they finish."""
        with self._lock:
            delta = limit - self.limit
            self.limit = limit
            while delta > 0 and self._debt:
                self._debt -= 1
                delta -= 1
            if delta > 0:
                self._free.extend([0] * delta)
            for _ in range(-delta):
                if not self.try_take():
                    self._debt += 1
            self.low = len(self._free)


class Job:
    """One call handed to a worker. The caller waits on ``done`` (a lock the worker releases);
    an asyncio caller is woken by ``notify``, called by the worker once the job is done."""

    __slots__ = (
        "args",
        "ctx",
        "done",
        "error",
        "fn",
        "kwargs",
        "notify",
        "permits",
        "quiet",
        "result",
        "state",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        notify: Callable[[], None] | None,
        permits: ConcurrencyLimit,
        quiet: bool,
    ) -> None:
        self.fn = fn
        self.notify = notify
        self.permits = permits  # the limit that admitted the job: the worker releases it
        self.quiet = quiet  # give the permit back without a latency sample
        self.args = args
        self.kwargs = kwargs
        self.ctx = contextvars.copy_context()
        self.done = threading.Lock()
        self.done.acquire()
        self.state = _QUEUED
        self.result: Any = None
        self.error: BaseException | None = None


class ThreadBulkhead:
    """A bounded pool of ``pool_size`` daemon workers with ``queue_size`` waiting slots.

    Or, once ``follow(limit)`` gave it an adaptive limit, one worker per call the limit admits:
    workers start as admitted calls need them and idle ones exit when the limit falls, so the
    pool's size follows the limit and no admitted call queues behind another.
    """

    def __init__(self, name: str, pool_size: int, queue_size: int) -> None:
        self.name = name
        self.pool_size = pool_size
        self.queue_size = queue_size
        self.fixed = Permits(pool_size + queue_size)
        self.permits: ConcurrencyLimit = self.fixed
        self._queue: SimpleQueue[Job | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.running = 0
        self.abandoned = 0
        self.executed = 0
        self.max_running = 0
        self._peak = 0  # most workers running at once since the last ``take_peak``
        # ``permits`` admits calls (any ConcurrencyLimit; workers release it). Whether workers
        # time each call for ``permits.release``: a fixed limit ignores the latency, so only a
        # limit that learns from it (adaptive) turns this on.
        self.measure = False
        self.following = False  # workers follow the admitting limit (adaptive), see follow()
        _pools.add(self)

    def follow(self, limit: ConcurrencyLimit | None) -> None:
        """Admit with ``limit`` (an adaptive one) from now on, one worker per admitted call;
        None: back to the fixed ``pool_size + queue_size`` permits. Jobs admitted before keep
        releasing the limit that admitted them."""
        with self._lock:
            self.permits = self.fixed if limit is None else limit
            self.following = limit is not None
            self.measure = limit is not None

    def reset_after_fork(self) -> None:
        """Forget the parent's workers, queue and in-flight calls (run in a forked child)."""
        self._lock = threading.Lock()
        self._threads = []
        self._queue = SimpleQueue()
        self.running = self.abandoned = 0
        self.fixed.reset_after_fork()  # an adaptive limit is reset by its dependency

    @property
    def queued(self) -> int:
        return 0 if self.following else max(0, self.permits.in_use - self.running)

    @property
    def limit(self) -> int:
        """Calls that may run at once: the adaptive limit when following one, else pool_size."""
        return self.permits.limit if self.following else self.pool_size

    def take_peak(self) -> int:
        """Most workers running at once since the last call of this (then starts over)."""
        with self._lock:
            peak, self._peak = max(self._peak, self.running), self.running
        return peak

    def resize(self, pool_size: int, queue_size: int) -> None:
        """Grow or shrink the pool at runtime (flags). Extra workers start on the next call."""
        with self._lock:
            shrink = self.pool_size - pool_size
            self.pool_size = pool_size
            self.queue_size = queue_size
            self.fixed.resize(pool_size + queue_size)
            if self.following:
                return  # the adaptive limit sizes the pool
            for _ in range(min(max(0, shrink), len(self._threads))):
                self._queue.put(None)  # one worker exits per None
                self._threads.pop()

    def close(self) -> None:
        """Let every idle worker exit (busy ones exit after their call); a later call starts
        new ones."""
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)
            self._threads = []

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        notify: Callable[[], None] | None = None,
        permits: ConcurrencyLimit | None = None,
        quiet: bool = False,
    ) -> Job:
        """Queue a call; the caller must have taken a permit from ``permits`` (default: the
        pool's ``permits``). ``notify`` is called once the job is over (run or skipped);
        ``quiet``: the permit goes back without a latency sample."""
        if permits is None:
            permits = self.permits
        if self.following:
            if len(self._threads) < permits.in_use:
                self._start_workers(permits.in_use)
        elif len(self._threads) < self.pool_size:
            self._start_workers(self.pool_size)
        job = Job(fn, args, kwargs, notify, permits, quiet)
        self._queue.put(job)
        return job

    def give_up(
        self, job: Job | None, permits: ConcurrencyLimit, done: Callable[[], None] | None
    ) -> None:
        """The caller was interrupted before it heard its job end: the job is abandoned (its
        worker finishes it on its own, then calls ``done``); one never submitted gives its
        permit back, and ``done`` runs now."""
        if job is not None:
            self.abandon(job)
            return
        permits.give_back()
        if done is not None:
            done()

    def abandon(self, job: Job) -> None:
        """The caller stopped waiting. A queued job will be skipped; a running one is counted."""
        with self._lock:
            if job.state == _QUEUED:
                job.state = _ABANDONED
            elif job.state == _RUNNING:
                job.state = _ABANDONED
                self.abandoned += 1

    def _start_workers(self, wanted: int) -> None:
        with self._lock:
            while len(self._threads) < wanted:
                t = threading.Thread(
                    target=self._work,
                    name=f"resilience-{self.name}-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(t)
                t.start()

    def _work(self) -> None:
        queue = self._queue
        lock = self._lock
        clock = time.perf_counter
        while True:
            job = queue.get()
            if job is None:
                return
            permits = job.permits
            with lock:
                if job.state == _ABANDONED:  # the caller timed out while the job was queued
                    self._give(job, 0.0, True)
                    job.done.release()
                    if job.notify is not None:
                        self._notify(job.notify)
                    continue
                job.state = _RUNNING
                self.running += 1
                if self.running > self.max_running:
                    self.max_running = self.running
                if self.running > self._peak:
                    self._peak = self.running
            measure = self.measure
            start = clock() if measure else 0.0
            dropped = True
            leave = False
            try:
                job.result = job.ctx.run(job.fn, *job.args, **job.kwargs)
                dropped = False
            except BaseException as exc:
                # KeyboardInterrupt or SystemExit from the function belongs to the caller, who
                # re-raises it; the worker lives on to serve the next call.
                job.error = exc
            finally:
                with lock:
                    self.running -= 1
                    self.executed += 1
                    if job.state == _ABANDONED:
                        self.abandoned -= 1
                        dropped = True
                    job.state = _DONE
                    self._give(job, clock() - start if measure else 0.0, dropped)
                    leave = self._surplus(permits)
                job.done.release()
                if job.notify is not None:
                    self._notify(job.notify)
            if leave:
                return

    @staticmethod
    def _give(job: Job, latency: float, dropped: bool) -> None:
        if job.quiet:
            job.permits.give_back()
        else:
            job.permits.release(latency, dropped)

    def _surplus(self, permits: ConcurrencyLimit) -> bool:
        # Called with the lock held: while following a limit, a worker beyond what the limit
        # (or the calls it admitted) needs leaves the pool.
        if not self.following or len(self._threads) <= max(permits.limit, permits.in_use):
            return False
        me = threading.current_thread()
        if me in self._threads:
            self._threads.remove(me)
            return True
        return False

    @staticmethod
    def _notify(notify: Callable[[], None]) -> None:
        # A closed loop raises here: its caller is gone, nobody is left to wake.
        with contextlib.suppress(Exception):
            notify()


_pools: weakref.WeakSet[ThreadBulkhead] = weakref.WeakSet()


def _reset_pools_after_fork() -> None:
    for pool in list(_pools):
        pool.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_after_fork)
