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

from ..errors import CacheError
from ._protocol import Parser

__all__ = ["CONNECT_LIMIT", "AcquireTimeoutError", "SyncConn", "SyncNode", "readable"]

CONNECT_LIMIT = 4  # connections opened at once per server

_now = time.monotonic


class AcquireTimeoutError(CacheError, TimeoutError):
    """The call waited its whole ``acquire_timeout`` for a zone permit or a connection.

    The client limited itself: this is never counted against the zone's circuit.
    """


if hasattr(select, "poll"):

    def readable(sock: socket.socket) -> bool:
        """Whether ``sock`` has bytes (or an EOF) to read now; works for any fd number."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

else:  # pragma: no cover - platforms without poll()

    def readable(sock: socket.socket) -> bool:
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            return bool(sel.select(0))


class SyncConn:
    """One blocking socket with a read buffer."""

    __slots__ = ("buf", "gen", "sock")

    def __init__(self, address: tuple[str, int], timeout: float, gen: int) -> None:
        self.sock = socket.create_connection(address, timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.gen = gen

    def send(self, payload: bytes, deadline: float) -> None:
        remaining = deadline - _now()
        if remaining <= 0:
            raise TimeoutError("deadline passed before sending")
        self.sock.settimeout(remaining)
        self.sock.sendall(payload)  # the timeout bounds the whole sendall

    def receive(self, parser: Parser, deadline: float) -> None:
        """Read until ``parser`` has the whole reply, or raise TimeoutError at ``deadline``."""
        buf, sock = self.buf, self.sock
        while not parser.feed(buf):
            remaining = deadline - _now()
            if remaining <= 0:
                raise TimeoutError("memcached reply not complete by the deadline")
            sock.settimeout(remaining)
            # 64 KiB: a larger request makes every recv allocate (and give back) a buffer
            # past the allocator's mmap threshold, which costs more than the round trip
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("memcached closed the connection")
            buf += chunk

    def ready(self) -> bool:
        """Whether a reply has (at least partly) arrived, without waiting."""
        return bool(self.buf) or readable(self.sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SyncNode:
    """A memcached server: a pool of idle connections and a limit on connects (thread-safe)."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float,
        max_idle: int,
        connect_limit: int = CONNECT_LIMIT,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.max_idle = max_idle
        self.connect_limit = connect_limit
        self._idle: list[SyncConn] = []  # list.pop()/append() are atomic
        self._gen = 0
        self._cond = threading.Condition(threading.Lock())
        self._connecting = 0
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
                    raise AcquireTimeoutError(
                        f"memcached {self.address[0]}:{self.address[1]}: no connection free"
                    )
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
            if conn.gen == self._gen and not conn.buf and not readable(conn.sock):
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

    def drop_idle(self) -> None:
        """Close every idle connection; connections out now are closed when given back."""
        self._gen += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections and waiters (their sockets are
        shared with the parent; the child must never read the parent's replies)."""
        self._gen += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()  # closes the child's descriptor only: the parent's socket lives on
        self._cond = threading.Condition(threading.Lock())
        self._connecting = 0
        self._waiting = 0

    def close(self) -> None:
        self.drop_idle()
