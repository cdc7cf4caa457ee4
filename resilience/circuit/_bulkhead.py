"""Bulkheads: a bounded thread pool per dependency, and lock-free permit sets.

Permits are a list of tokens: ``list.pop()`` and ``list.append()`` are atomic, so taking and
giving back a permit needs no lock and no Python-level semaphore (``threading.Semaphore`` costs
more than a whole protected call should).

The pool admits ``pool_size + queue_size`` calls; a permit is returned when the worker finishes
the call, not when the caller gives up. A caller that timed out leaves its worker *abandoned*
(Python cannot kill a thread): the worker keeps its permit until the function really returns, so
abandoned workers can never make the pool run more than ``pool_size`` calls at once.

After ``os.fork()`` the child has none of the parent's worker threads and none of the calls that
held permits: every pool and permit set drops them there (``os.register_at_fork``), so the child
starts with empty pools, full permits and fresh locks.
"""

from __future__ import annotations

import contextvars
import os
import threading
import weakref
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

__all__ = ["Job", "Permits", "ThreadBulkhead"]

_QUEUED, _RUNNING, _DONE, _ABANDONED = 0, 1, 2, 3


class Permits:
    """A fixed set of permits, taken and returned without a lock."""

    __slots__ = ("_debt", "_free", "_lock", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = [0] * limit
        self._debt = 0  # permits to swallow as they come back after the limit shrank
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        try:
            self._free.pop()
        except IndexError:
            return False
        return True

    def give(self) -> None:
        if self._debt:
            with self._lock:
                if self._debt:
                    self._debt -= 1
                    return
        self._free.append(0)

    @property
    def in_use(self) -> int:
        return self.limit + self._debt - len(self._free)

    def reset_after_fork(self) -> None:
        """Every permit free again: the calls that held them live in the parent only."""
        self._lock = threading.Lock()
        self._debt = 0
        self._free[:] = [0] * self.limit  # in place: fast paths hold this very list

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


class Job:
    """One call handed to a worker. The caller waits on ``done`` (a lock the worker releases)."""

    __slots__ = ("args", "ctx", "done", "error", "fn", "kwargs", "result", "state")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
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

    def resize(self, pool_size: int, queue_size: int) -> None:
        """Grow or shrink the pool at runtime (flags). Extra workers start on the next call."""
        with self._lock:
            shrink = self.pool_size - pool_size
            self.pool_size = pool_size
            self.queue_size = queue_size
            self.permits.resize(pool_size + queue_size)
            for _ in range(max(0, shrink)):
                self._queue.put(None)  # one worker exits per None
                self._threads.pop()

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Job:
        """Queue a call; the caller must have taken a permit from ``self.permits``."""
        if len(self._threads) < self.pool_size:
            self._start_workers()
        job = Job(fn, args, kwargs)
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
        while True:
            job = queue.get()
            if job is None:
                return
            with lock:
                if job.state == _ABANDONED:  # the caller timed out while the job was queued
                    self.permits.give()
                    continue
                job.state = _RUNNING
                self.running += 1
                if self.running > self.max_running:
                    self.max_running = self.running
            try:
                job.result = job.ctx.run(job.fn, *job.args, **job.kwargs)
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
                    job.state = _DONE
                    self.permits.give()
                job.done.release()


_pools: weakref.WeakSet[ThreadBulkhead] = weakref.WeakSet()


def _reset_pools_after_fork() -> None:
    for pool in list(_pools):
        pool.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_after_fork)
