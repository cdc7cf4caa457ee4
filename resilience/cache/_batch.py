"""Auto-batched async gets: gets of one zone issued in the same event-loop turn (or within
``batch_window`` seconds) go out as one multi-get per server.

Each caller still gets exactly what a get of its own would have given it: its key's item or
a miss, or the zone's failure. A batch is one zone call (one permit, one circuit ticket), so a
burst of a thousand gets costs the server a handful of requests. A caller that is cancelled
leaves the batch running for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._async_node import AsyncNode
from ._stats import CacheStats
from ._zones import Zone

__all__ = ["Batcher"]

Outcome = tuple[bool, Any]
Start = Callable[[Zone[AsyncNode], str, tuple[Any, ...], Callable[[bool, Any], None]], Any]


class Batcher:
    """Collects one zone's pending gets and sends them when the window closes."""

    __slots__ = ("_handle", "_loop", "_max", "_pending", "_start", "_stats", "_window", "zone")

    def __init__(
        self,
        zone: Zone[AsyncNode],
        window: float,
        max_batch: int,
        start: Start,
        stats: CacheStats,
    ) -> None:
        self.zone = zone
        self._window = window
        self._max = max_batch
        self._start = start
        self._stats = stats
        self._pending: dict[bytes, list[asyncio.Future[Outcome]]] | None = None
        self._handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, key: bytes) -> asyncio.Future[Outcome]:
        """A future of ``(ok, item or None)``, or ``(False, error)``, for ``key``."""
        pending = self._pending
        loop = self._loop
        if pending is None:
            # one instance per loop; still, a loop that changed is the one to use
            loop = self._loop = asyncio.get_running_loop()
            pending = self._pending = {}
            if self._window:
                self._handle = loop.call_later(self._window, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)
        assert loop is not None
        future: asyncio.Future[Outcome] = loop.create_future()
        waiters = pending.get(key)
        if waiters is None:
            pending[key] = [future]
            if len(pending) >= self._max:
                self._flush()
        else:
            waiters.append(future)
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        if not pending:
            return
        if len(pending) > 1:
            self._stats.batch(len(pending))

        def done(ok: bool, reply: Any) -> None:
            for key, futures in pending.items():
                outcome = (True, reply.get(key)) if ok else (False, reply)
                for future in futures:
                    if not future.done():
                        future.set_result(outcome)

        self._start(self.zone, "get_many", (list(pending),), done)

    def after_fork(self) -> None:
        self._pending = None
        self._handle = None
        self._loop = None
