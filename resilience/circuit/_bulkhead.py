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
```

``release`` gets the call's latency (seconds) and whether it was dropped (failed or timed out),
which is what an adaptive limit learns from; a fixed one ignores both. A call refused a permit is
not run: ``BulkheadFullError`` (``rejected``) or the fallback.

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

__all__ = ["ConcurrencyLimit", "Job", "Permits", "ThreadBulkhead"]

_QUEUED, _RUNNING, _DONE, _ABANDONED = 0, 1, 2, 3


class ConcurrencyLimit(Protocol):
    """What the concurrency-limit step asks of a limit (see the module docstring)."""

    limit: int
    wait: float

    @property
    def in_use(self) -> int: ...

    def try_acquire(self) -> bool: ...

    def acquire(self, max_wait: float) -> bool: ...

    async def acquire_async(self, max_wait: float) -> bool: ...

    def release(self, latency: float, dropped: bool) -> None: ...


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

    __slots__ = ("args", "ctx", "done", "error", "fn", "kwargs", "notify", "result", "state")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.fn = fn
        self.notify = notify
        self.args = args
        self.kwargs = kwargs
        self.ctx = contextvars.copy_context()
        self.done = threading.Lock()
        self.done.acquire()
        self.state = _QUEUED
        self.result: Any = None
        self.error: BaseException | None = None


class ThreadBulkhead:
    """A bounded pool of ``pool_size`` daemon workers with ``queue_size`` waiting slots."""

    def __init__(self, name: str, pool_size: int, queue_size: int) -> None:
        self.name = name
        self.pool_size = pool_size
        self.queue_size = queue_size
        self.permits = Permits(pool_size + queue_size)
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
        _pools.add(self)

    def reset_after_fork(self) -> None:
        """Forget the parent's workers, queue and in-flight calls (run in a forked child)."""
        self._lock = threading.Lock()
        self._threads = []
        self._queue = SimpleQueue()
        self.running = self.abandoned = 0
        self.permits.reset_after_fork()

    @property
    def queued(self) -> int:
        return max(0, self.permits.in_use - self.running)

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
            self.permits.resize(pool_size + queue_size)
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
    ) -> Job:
        """Queue a call; the caller must have taken a permit from ``self.permits``."""
        if len(self._threads) < self.pool_size:
            self._start_workers()
        job = Job(fn, args, kwargs, notify)
        self._queue.put(job)
        return job

    def abandon(self, job: Job) -> None:
        """The caller stopped waiting. A queued job will be skipped; a running one is counted."""
        with self._lock:
            if job.state == _QUEUED:
                job.state = _ABANDONED
            elif job.state == _RUNNING:
                job.state = _ABANDONED
                self.abandoned += 1

    def _start_workers(self) -> None:
        with self._lock:
            while len(self._threads) < self.pool_size:
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
            # Read per job: the admission may be swapped for a limit that learns (adaptive).
            permits = self.permits
            with lock:
                if job.state == _ABANDONED:  # the caller timed out while the job was queued
                    permits.release(0.0, True)
                    job.done.release()
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
                    permits.release(clock() - start if measure else 0.0, dropped)
                job.done.release()
                if job.notify is not None:
                    self._notify(job.notify)

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
