"""Single flight: the first caller of a key fetches, the others wait for its answer.

A :class:`Flight` lives in a dict under a lock: the request scope's ``memo``/``lock`` for
per-request dedup (entries stay, so later reads in the request are answered from memory), or a
cache's own dict for read-through loads (entries leave when the load ends). Waiters may be
threads (an Event) and tasks of any event loop (futures resolved thread-safely), mixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Hashable, MutableMapping
from typing import Any

__all__ = ["RETRY", "Failed", "Flight", "finish", "join", "remember", "wait_async", "wait_sync"]


class _Retry:
    def __repr__(self) -> str:
        return "RETRY"


# What waiters get when the leader could not give a trustworthy answer: fetch it yourself.
RETRY: Any = _Retry()
_PENDING: Any = object()


class Failed:
    """A leader's exception, handed to its waiters."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class Flight:
    """One fetch of one key: pending until ``finish`` gives it a value."""

    __slots__ = ("done", "event", "futures", "value")

    def __init__(self, value: Any = _PENDING) -> None:
        self.done = value is not _PENDING
        self.value = value
        self.event: threading.Event | None = None
        self.futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


Memo = MutableMapping[Hashable, Any]


def join(memo: Memo, lock: threading.Lock, key: Hashable) -> tuple[Flight, bool]:
    """The flight for ``key`` and whether the caller leads it (must fetch, then ``finish``)."""
    entry = memo.get(key)
    if entry is not None and entry.done:
        return entry, False
    with lock:
        entry = memo.get(key)
        if entry is None:
            entry = memo[key] = Flight()
            return entry, True
        return entry, False


def remember(memo: Memo, key: Hashable, value: Any) -> None:
    """Record a known value (a write in the request) without a fetch."""
    memo[key] = Flight(value)


def finish(
    memo: Memo, lock: threading.Lock, key: Hashable, flight: Flight, value: Any, keep: bool
) -> None:
    """Give the flight its value, wake its waiters; ``keep`` leaves it in the memo."""
    with lock:
        flight.value = value
        flight.done = True
        if memo.get(key) is flight and not keep:
            del memo[key]
        event, futures, flight.futures = flight.event, flight.futures, []
    if event is not None:
        event.set()
    for loop, future in futures:
        # a waiter whose loop is closed is waiting no more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def wait_sync(lock: threading.Lock, flight: Flight, timeout: float) -> Any:
    """The flight's value once it has one; RETRY if that takes longer than ``timeout``."""
    if not flight.done:
        with lock:
            if not flight.done and flight.event is None:
                flight.event = threading.Event()
            event = flight.event
        if event is not None and not event.wait(timeout):
            return RETRY
    return flight.value


async def wait_async(lock: threading.Lock, flight: Flight, timeout: float) -> Any:  # noqa: ASYNC109
    """The coroutine counterpart of :func:`wait_sync`."""
    if not flight.done:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with lock:
            pending = not flight.done
            if pending:
                flight.futures.append((loop, future))
        if pending:
            try:
                async with asyncio.timeout(timeout):
                    await future
            except TimeoutError:
                return RETRY
    return flight.value
