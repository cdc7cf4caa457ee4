"""Server-sent event streams: the admin state every interval, and circuit state changes.

State changes happen on whatever thread ran the call; the hub hands them to the event loop with
``call_soon_threadsafe`` and each client reads its own queue, so a slow client never holds up a
protected call or another client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from .. import metrics as m
from ..circuit import Registry, StateChange
from ._state import state_change_view

__all__ = ["StreamHub", "serve_events"]

log = logging.getLogger("resilience.web")

# A message: (event name or None for the default "message" event, JSON-able data).
Message = tuple[str | None, Any]
_CLOSE = object()


class _ClientCount:
    """The ``resilience_stream_clients`` gauge: clients connected to every hub in the process."""

    def __init__(self) -> None:
        self.by_stream: dict[str, int] = {}

    def add(self, stream: str, delta: int) -> None:
        self.by_stream[stream] = self.by_stream.get(stream, 0) + delta

    def collect_metrics(self) -> Iterator[Any]:
        family = m.gauge(
            m.STREAM_CLIENTS, "Clients connected to an admin event stream.", ["stream"]
        )
        for stream, n in sorted(self.by_stream.items()):
            family.add_metric([stream], n)
        yield family


CLIENTS = _ClientCount()


class StreamHub:
    """Clients of one admin app's streams, their limit, and the state-change feed they share."""

    def __init__(self, reg: Registry, limit: int) -> None:
        self.limit = limit
        self._reg = reg
        self._clients: set[asyncio.Queue[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._clients)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._unsubscribe = self._reg.on_state_change(self._on_change)

    def stop(self) -> None:
        """Ends every stream (their handlers return) and stops listening to the registry."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for queue in self._clients:
            queue.put_nowait(_CLOSE)

    def join(self) -> asyncio.Queue[Any] | None:
        """A queue for a new client, or None when ``limit`` clients are connected already."""
        if len(self._clients) >= self.limit:
            return None
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._clients.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[Any]) -> None:
        self._clients.discard(queue)

    def _on_change(self, change: StateChange) -> None:
        # Runs on the thread that made the transition: only hand it over, never wait.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        view = state_change_view(change)
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            loop.call_soon_threadsafe(self._fan_out, view)

    def _fan_out(self, view: dict[str, Any]) -> None:
        for queue in self._clients:
            queue.put_nowait(view)


def _frame(event: str | None, data: Any) -> bytes:
    head = "" if event is None else f"event: {event}\n"
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def serve_events(
    request: web.Request,
    hub: StreamHub,
    name: str,
    interval: float,
    tick: Callable[[], list[Message]],
    changes: bool,
) -> web.StreamResponse:
    """Stream ``tick()``'s messages every ``interval`` seconds, and state changes if ``changes``.

    Past the hub's client limit the request gets 503, as Hystrix's stream does.
    """
    queue = hub.join()
    if queue is None:
        raise web.HTTPServiceUnavailable(
            text=f"at most {hub.limit} stream clients", headers={"Retry-After": "5"}
        )
    CLIENTS.add(name, 1)
    loop = asyncio.get_running_loop()
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
            for event, data in tick():
                await response.write(_frame(event, data))
            deadline = loop.time() + interval
            while (left := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if item is _CLOSE:
                    return response
                if changes:
                    await response.write(_frame("state_change", item))
    except ConnectionError:
        log.debug("a client of %s went away", name)
        return response
    finally:
        hub.leave(queue)
        CLIENTS.add(name, -1)
