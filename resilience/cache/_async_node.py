"""asyncio connections to one memcached server: a Protocol that parses replies as they arrive.

Replies are parsed in ``data_received`` and the exchange's callback runs there, so the caller
never pays a task switch per line, and an answer that arrived is never mistaken for a timeout:
asyncio runs I/O callbacks before the timers due in the same loop turn, so even when the loop
was held up past a call's deadline, a reply already in the socket completes the call first.

Idle connections watch their socket: one the server closes (a restart) leaves the pool at once.
A connection-level error drops every idle connection of the node; at most ``connect_limit``
connections are opened at once per server, and callers past that wait (FIFO) for one.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from ._pool import Pool
from ._protocol import Parser

__all__ = ["AsyncConn", "AsyncNode"]

Done = Callable[[BaseException | None], None]


class AsyncConn(asyncio.Protocol):
    """One connection; at most one exchange at a time."""

    def __init__(self, node: AsyncNode, gen: int) -> None:
        self.node = node
        self.gen = gen
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.parser: Parser | None = None
        self.done: Done | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parser = self.parser
        if parser is None:  # bytes no exchange asked for: the stream is out of step
            self.close()
            return
        try:
            complete = parser.feed(self.buf)
        except Exception as exc:
            self._finish(exc)
            return
        if complete:
            self._finish(None)

    def eof_received(self) -> bool:
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None:
            self._finish(exc or ConnectionResetError("memcached closed the connection"))

    def request(self, payload: bytes, parser: Parser, done: Done) -> None:
        """Send ``payload``; ``done(None)`` once ``parser`` has the reply, else ``done(error)``."""
        if self.closed or self.transport is None:
            done(ConnectionResetError("connection closed"))
            return
        self.parser = parser
        self.done = done
        self.transport.write(payload)

    def abort(self) -> None:
        """The exchange is given up (deadline, cancellation): close, never reuse."""
        self.parser = None
        self.done = None
        self.close()

    def _finish(self, error: BaseException | None) -> None:
        done = self.done
        self.parser = None
        self.done = None
        if error is not None:
            self.close()
        if done is not None:
            done(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class AsyncNode(Pool[AsyncConn]):
    """A memcached server: idle connections and bounded connects (one event loop)."""

    def _new_waiters(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_idle(self) -> AsyncConn | None:
        """An idle connection still open, without waiting."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.gen == self._gen and not conn.buf:
                return conn
            conn.close()
        return None

    async def checkout(self, fresh: bool, deadline: float) -> AsyncConn:
        """An idle connection, or a new one (``fresh``: always new), waiting until ``deadline``
        (monotonic loop time) while ``connect_limit`` connects are under way."""
        loop = asyncio.get_running_loop()
        if fresh:
            self.drop_idle()
        while True:
            if not fresh:
                conn = self.take_idle()
                if conn is not None:
                    return conn
            if self._connecting < self.connect_limit:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._no_connection()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()
        self._connecting += 1
        gen = self._gen
        try:
            # a connect may take until the caller's acquire deadline: on a busy loop (a burst
            # of a thousand callers) the zone timeout would measure the loop, not the server
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                _, conn = await loop.create_connection(
                    lambda: AsyncConn(self, gen), self.address[0], self.address[1]
                )
            return conn
        finally:
            self._connecting -= 1
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def checkin(self, conn: AsyncConn) -> None:
        """Give back a connection whose exchange finished cleanly."""
        if not conn.closed and conn.gen == self._gen and len(self._idle) < self.max_idle:
            self._idle.append(conn)
            if self._waiters:
                self._wake()
        else:
            conn.close()

    def _forget(self, idle: list[AsyncConn]) -> None:
        # the event loop's selector is shared with the parent: nothing is closed or read here
        pass

    async def close(self) -> None:
        self.drop_idle()
