"""Zone permits that callers wait for: past ``max_concurrent`` a call queues, it is not refused.

A refused call used to read as a miss (and, spinning without yielding, could stall an event
loop into timeouts that opened a healthy zone). Now a caller waits for a permit until its own
deadline (``acquire_timeout``); only then is the zone skipped for that call, with an
``AcquireTimeoutError`` that is the client's own limit, never counted against the zone.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time

from ._pool import AcquireTimeoutError

__all__ = ["AsyncGate", "SyncGate"]


class SyncGate:
    """Permits for threads: a lock-free fast path, a condition to wait on when none is free."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._free = [0] * limit
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0

    def acquire(self, timeout: float) -> None:
        try:
            self._free.pop()
            return
        except IndexError:
            pass
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    try:
                        self._free.pop()
                        return
                    except IndexError:
                        pass
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AcquireTimeoutError(f"{self.name}: no zone permit free")
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1

    def release(self) -> None:
        self._free.append(0)
        if self._waiting:
            with self._cond:
                self._cond.notify()

    @property
    def in_use(self) -> int:
        return self.limit - len(self._free)

    @property
    def waiting(self) -> int:
        return self._waiting

    def after_fork(self) -> None:
        """In a forked child: permits held by the parent's other threads are free again."""
        self._free = [0] * self.limit
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0


class AsyncGate:
    """Permits for tasks of one event loop, handed to waiters in arrival order."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        if self._used < self.limit and not self._waiters:
            self._used += 1
            return True
        return False

    async def acquire(self, timeout: float) -> None:  # noqa: ASYNC109
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the permit was handed over as the deadline passed: keep it
            raise AcquireTimeoutError(f"{self.name}: no zone permit free") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a permit, then cancelled: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the permit passes to the waiter; _used stays
                return
        self._used -= 1

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def after_fork(self) -> None:
        self._used = 0
        self._waiters = collections.deque()
