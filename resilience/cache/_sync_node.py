"""Blocking connections to one memcached server, pooled, with one deadline per exchange.

An exchange (send a payload, read its replies) is bounded by one deadline, not a timeout per
``recv``: a server that trickles its reply cannot hold a caller past it. A connection whose
exchange did not finish cleanly (timeout, reset, interruption, a reply out of step) is closed,
never reused: its stream may still carry the late reply.

The pool: idle connections are checked before reuse (one that the server closed, or that holds
unread bytes, is dropped); a connection-level error drops every idle connection of the node
(a restarted server leaves all of them dead); at most ``connect_limit`` connections are being
opened at once, so a burst of callers does not stampede a server.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import threading
import time
from typing import Any

from ._pool import Pool
from ._protocol import Parser

__all__ = ["SyncConn", "SyncNode"]

_now = time.monotonic


if hasattr(select, "poll"):
    _IN, _OUT = select.POLLIN, select.POLLOUT

    def _poller(sock: socket.socket) -> Any:
        """A poll object watching ``sock`` for reading (any fd number, one registration)."""
        poller = select.poll()
        poller.register(sock, _IN)
        return poller

else:  # pragma: no cover - platforms without poll()
    _IN, _OUT = selectors.EVENT_READ, selectors.EVENT_WRITE

    class _SelectorPoller:
        """poll()'s surface over a selector, for the few platforms without poll()."""

        def __init__(self, sock: socket.socket) -> None:
            self._sel = selectors.DefaultSelector()
            self._sel.register(sock, _IN)
            self._sock = sock

        def poll(self, ms: float | None = None) -> list[Any]:
            return self._sel.select(None if ms is None else ms / 1000)

        def modify(self, sock: socket.socket, events: int) -> None:
            self._sel.modify(sock, events)

    def _poller(sock: socket.socket) -> Any:
        return _SelectorPoller(sock)


class SyncConn:
    """One non-blocking socket with a read buffer and a poll object of its own.

    The socket never blocks: each ``send`` and ``recv`` is one system call, and waiting is one
    ``poll`` bounded by the exchange's deadline (no ``settimeout`` per operation, and no poll
    object built per wait).
    """

    __slots__ = ("buf", "gen", "poller", "sock")

    def __init__(self, address: tuple[str, int], timeout: float, gen: int) -> None:
        self.sock = sock = socket.create_connection(address, timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.poller = _poller(sock)
        self.buf = bytearray()
        self.gen = gen

    def send(self, payload: bytes, deadline: float) -> None:
        """Send all of ``payload`` by ``deadline`` (a small request goes out in one call)."""
        try:
            sent = self.sock.send(payload)
        except BlockingIOError:
            sent = 0
        if sent < len(payload):
            self._send_rest(memoryview(payload)[sent:], deadline)

    def _send_rest(self, view: memoryview, deadline: float) -> None:
        sock, poller = self.sock, self.poller
        poller.modify(sock, _OUT)
        try:
            while view:
                remaining = deadline - _now()
                if remaining <= 0:
                    raise TimeoutError("memcached request not sent by the deadline")
                if not poller.poll(remaining * 1000):
                    continue
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    continue
        finally:
            poller.modify(sock, _IN)

    def receive(self, parser: Parser, deadline: float) -> None:
        """Read until ``parser`` has the whole reply, or raise TimeoutError at ``deadline``."""
        buf = self.buf
        if buf and parser.feed(buf):
            return
        sock, poll = self.sock, self.poller.poll
        while True:
            remaining = deadline - _now()
            if remaining <= 0:
                raise TimeoutError("memcached reply not complete by the deadline")
            if not poll(remaining * 1000):
                continue
            try:
                # 64 KiB: a larger request makes every recv allocate (and give back) a buffer
                # past the allocator's mmap threshold, which costs more than the round trip
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionResetError("memcached closed the connection")
            buf += chunk
            if parser.feed(buf):
                return

    def ready(self) -> bool:
        """Whether a reply has (at least partly) arrived, without waiting."""
        return bool(self.buf) or bool(self.poller.poll(0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SyncNode(Pool[SyncConn]):
    """A memcached server: a pool of idle connections and a limit on connects (thread-safe)."""

    def _new_waiters(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0

    def checkout(self, fresh: bool, deadline: float) -> SyncConn:
        """An idle connection that is still good, or a new one (``fresh``: always new).

        Waits (until ``deadline``, then ``AcquireTimeoutError``) while ``connect_limit``
        connects are under way; a connection returned meanwhile is taken instead.
        """
        if fresh:
            self.drop_idle()
        else:
            conn = self._take_idle()
            if conn is not None:
                return conn
        with self._cond:
            while self._connecting >= self.connect_limit:
                if not fresh and self._idle:
                    conn = self._take_idle()
                    if conn is not None:
                        return conn
                remaining = deadline - _now()
                if remaining <= 0:
                    raise self._no_connection()
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1
            self._connecting += 1
            gen = self._gen
        try:  # a connect may take until the caller's acquire deadline, like the async one
            return SyncConn(self.address, max(0.001, deadline - _now()), gen)
        finally:
            with self._cond:
                self._connecting -= 1
                self._cond.notify()

    def _take_idle(self) -> SyncConn | None:
        idle = self._idle
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                return None
            if conn.gen == self._gen and not conn.buf and not conn.poller.poll(0):
                return conn
            conn.close()  # closed by the server, or bytes nobody asked for

    def checkin(self, conn: SyncConn) -> None:
        """Give back a connection whose exchange finished cleanly."""
        if conn.gen == self._gen and len(self._idle) < self.max_idle:
            self._idle.append(conn)
            if self._waiting:
                with self._cond:
                    self._cond.notify()
        else:
            conn.close()

    def _forget(self, idle: list[SyncConn]) -> None:
        # the child must never read the parent's replies: close its own descriptors (the
        # parent's sockets live on)
        for conn in idle:
            conn.close()

    def close(self) -> None:
        self.drop_idle()
