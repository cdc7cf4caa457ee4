"""Server-sent event streams: one snapshot per tick, shared by every client, with bounded queues.

The hub owns one ticker task per admin app. Every ``interval`` it asks each stream with clients
for its frames once (a stream's frames are computed once per tick, whatever the number of
clients) and offers the same bytes to every client that is due. Circuit state changes arrive on
whatever thread made the transition; they are handed to the event loop in batches and offered the
same way.

Each client has its own queue of at most ``backlog`` messages. A client that stops reading (or
reads slower than the stream is produced) fills it; it is then dropped: its connection is closed,
which ends a write that was waiting on it, and ``resilience_stream_dropped_clients_total`` counts
it. An ``EventSource`` reconnects by itself, and gets the current state at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from aiohttp import web

from .. import metrics as m
from ..circuit import Registry, StateChange
from ._state import state_change_view

__all__ = ["PING", "Shared", "StreamHub", "frame", "serve_events"]

log = logging.getLogger("resilience.web")

T = TypeVar("T")
# What Hystrix's servlet sends when it has no data, so Turbine and the dashboard keep listening.
PING = b"ping: \n\n"
_CLOSE = b""  # never a frame: tells a client's handler to end its stream
# State changes kept while the event loop is busy; past it the oldest are forgotten (the next
# state message carries the truth anyway) instead of growing without bound.
_MAX_PENDING_CHANGES = 1000


class _ClientCount:
    """The stream gauges: clients connected to every hub in the process, and clients dropped."""

    def __init__(self) -> None:
        self.by_stream: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def add(self, stream: str, delta: int) -> None:
        self.by_stream[stream] = self.by_stream.get(stream, 0) + delta

    def drop(self, stream: str) -> None:
        self.dropped[stream] = self.dropped.get(stream, 0) + 1

    def collect_metrics(self) -> Iterator[Any]:
        family = m.gauge(
            m.STREAM_CLIENTS, "Clients connected to an admin event stream.", ["stream"]
        )
        for stream, n in sorted(self.by_stream.items()):
            family.add_metric([stream], n)
        yield family
        dropped = m.counter(
            m.STREAM_DROPPED, "Stream clients dropped for falling behind the stream.", ["stream"]
        )
        for stream, n in sorted(self.dropped.items()):
            dropped.add_metric([stream], n)
        yield dropped


CLIENTS = _ClientCount()


def frame(event: str | None, data: Any) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return encoded_frame(event, json.dumps(data, separators=(",", ":")).encode())


def encoded_frame(event: str | None, body: bytes) -> bytes:
    head = b"" if event is None else b"event: " + event.encode() + b"\n"
    return head + b"data: " + body + b"\n\n"


class Shared(Generic[T]):
    """A value computed at most once per ``max_age`` seconds and shared by every reader.

    The stream ticker calls :meth:`refresh` once per tick; request handlers call :meth:`get`,
    which reuses the tick's value while it is fresh, so N readers cost one computation.
    """

    def __init__(self, compute: Callable[[], T], clock: Callable[[], float] = time.monotonic):
        self._compute = compute
        self._clock = clock
        self._value: T | None = None
        self._at = 0.0
        self.computed = 0  # how many times the value was computed, for tests and benchmarks

    def refresh(self) -> T:
        value = self._compute()
        self._value, self._at = value, self._clock()
        self.computed += 1
        return value

    def get(self, max_age: float) -> T:
        value = self._value
        if value is None or self._clock() - self._at >= max_age:
            return self.refresh()
        return value

    def invalidate(self) -> None:
        """The next :meth:`get` computes afresh (after a write changed what it shows)."""
        self._value = None


class _Client:
    """One connected stream client: its queue, its pace and its connection."""

    __slots__ = ("changes", "due", "interval", "queue", "stream", "transport")

    def __init__(
        self,
        stream: str,
        interval: float,
        changes: bool,
        backlog: int,
        transport: asyncio.Transport | None,
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.changes = changes
        self.due = 0.0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(backlog)
        self.transport = transport


class StreamHub:
    """The streams of one admin app: their clients, the ticker, and the state-change feed."""

    def __init__(self, reg: Registry, limit: int, interval: float, backlog: int) -> None:
        self.limit = limit
        self.interval = interval
        self.backlog = backlog
        self._reg = reg
        self._sources: dict[str, Callable[[bool], bytes]] = {}
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._pending: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=_MAX_PENDING_CHANGES
        )
        self._flush_scheduled = False
        self._watching_changes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._clients)

    def add_stream(self, name: str, source: Callable[[bool], bytes]) -> None:
        """Register a stream: ``source(fresh)`` returns its frames (``fresh``: on a tick)."""
        self._sources[name] = source

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._unsubscribe = self._reg.on_state_change(self._on_change)
        self._ticker = loop.create_task(self._run(), name="resilience-admin-streams")

    def stop(self) -> None:
        """Ends every stream (their handlers return) and stops the ticker and the feed."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for client in list(self._clients):
            self._close(client)

    # -- clients --------------------------------------------------------------------------

    def join(
        self,
        stream: str,
        interval: float,
        changes: bool,
        transport: asyncio.Transport | None,
    ) -> _Client | None:
        """A new client, its queue holding the stream's current frames; None past ``limit``."""
        if len(self._clients) >= self.limit:
            return None
        client = _Client(stream, interval, changes, self.backlog, transport)
        self._clients.add(client)
        self._watching_changes += changes
        self._offer(client, self._sources[stream](False))
        if self._loop is not None:
            client.due = self._loop.time() + interval
        return client

    def leave(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._watching_changes -= client.changes

    def _offer(self, client: _Client, data: bytes) -> None:
        try:
            client.queue.put_nowait(data)
        except asyncio.QueueFull:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        log.warning("dropping a %s stream client: %d messages behind", client.stream, self.backlog)
        self.dropped += 1
        CLIENTS.drop(client.stream)
        self._close(client)

    def _close(self, client: _Client) -> None:
        # The handler may be waiting on a write the client does not read: closing the
        # connection ends that wait; the close marker ends a handler waiting on its queue.
        self.leave(client)
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(_CLOSE)
        transport = client.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    # -- ticks ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.tick()
            except Exception:  # a failing tick must not end every stream for good
                log.exception("admin stream tick failed")

    def tick(self) -> None:
        """Offer each stream's frames, computed once, to each of its clients that is due."""
        assert self._loop is not None
        now = self._loop.time()
        # A client whose own interval is longer than the tick (Hystrix's ?delay=) skips ticks;
        # half a tick of slack keeps timer jitter from making it skip one too many.
        slack = self.interval / 2
        due: dict[str, list[_Client]] = {}
        for client in self._clients:
            if now + slack >= client.due:
                due.setdefault(client.stream, []).append(client)
        for stream, clients in due.items():
            data = self._sources[stream](True)
            for client in clients:
                client.due = now + client.interval
                self._offer(client, data)

    # -- state changes --------------------------------------------------------------------

    def _on_change(self, change: StateChange) -> None:
        # Runs on the thread that made the transition: only hand it over, never wait.
        loop = self._loop
        if loop is None or loop.is_closed() or not self._watching_changes:
            return
        view = state_change_view(change)
        with self._lock:
            self._pending.append(view)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            views = list(self._pending)
            self._pending.clear()
            self._flush_scheduled = False
        if not views:
            return
        # One queue entry per batch: a burst of transitions costs a client one slot, not one each.
        data = b"".join(frame("state_change", view) for view in views)
        for client in list(self._clients):
            if client.changes:
                self._offer(client, data)


async def serve_events(
    request: web.Request, hub: StreamHub, stream: str, interval: float, changes: bool
) -> web.StreamResponse:
    """Stream ``stream``'s frames to this client every ``interval``, and state changes if asked.

    Past the hub's client limit the request gets 503, as Hystrix's stream does.
    """
    client = hub.join(stream, interval, changes, request.transport)
    if client is None:
        raise web.HTTPServiceUnavailable(
            text=f"at most {hub.limit} stream clients", headers={"Retry-After": "5"}
        )
    CLIENTS.add(stream, 1)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not buffer a live stream
        }
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        while True:
            data = await client.queue.get()
            if data is _CLOSE or not data:
                return response
            await response.write(data)
    except ConnectionError:
        log.debug("a client of %s went away", stream)
        return response
    finally:
        hub.leave(client)
        CLIENTS.add(stream, -1)
