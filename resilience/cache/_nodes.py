"""Connections to one memcached server: a blocking driver and an asyncio driver.

Both run an *exchange*: send one payload (one command, or several pipelined), then read
``count`` replies of one kind with the shared parsers of ``_protocol``. The blocking node also
splits it (``send``, then ``receive``) so one thread can have several servers working at once.
A connection whose exchange did not finish cleanly (timeout, reset, cancellation) is closed,
never reused: its stream may still carry the late reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from typing import Any

from . import _protocol as proto

__all__ = ["GET", "INCR", "REPLY", "AsyncNode", "SyncNode"]

GET, REPLY, INCR = 0, 1, 2


class _Conn:
    """One blocking socket with a read buffer."""

    __slots__ = ("buf", "sock")

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.sock = socket.create_connection(address, timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def readline(self) -> bytes:
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                line = bytes(buf[:end])
                del buf[: end + 2]
                return line
            self._fill()

    def read(self, n: int) -> bytes:
        buf = self.buf
        while len(buf) < n:
            self._fill()
        block = bytes(buf[:n])
        del buf[:n]
        return block

    def _fill(self) -> None:
        # 64 KiB: a larger request makes every recv allocate (and give back) a buffer past
        # the allocator's mmap threshold, which costs more than the round trip it waits for
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("memcached closed the connection")
        self.buf += chunk


class SyncNode:
    """A blocking memcached server client with an idle-connection pool (thread-safe).

    ``timeout`` bounds connecting and every read (socket timeouts), so a stalled server costs a
    caller at most about ``timeout`` before its zone's breaker records the failure.
    """

    def __init__(self, address: tuple[str, int], timeout: float, max_idle: int) -> None:
        self.address = address
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[_Conn] = []  # list.pop()/append() are atomic: no lock needed

    def exchange(self, payload: bytes, kind: int, count: int) -> Any:
        return self.receive(self.send(payload), kind, count)

    def send(self, payload: bytes) -> _Conn:
        """Send ``payload`` on an idle (or new) connection; ``receive`` reads its replies.

        Splitting the exchange lets one thread pipeline a write to several servers: send to
        all of them, then read every reply, so the servers work at the same time.
        """
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = _Conn(self.address, self.timeout)
        try:
            conn.sock.sendall(payload)
        except BaseException:
            _close(conn)
            raise
        return conn

    def receive(self, conn: _Conn, kind: int, count: int) -> Any:
        """Read ``count`` replies of one kind from a connection ``send`` returned."""
        clean = False
        try:
            if kind == GET:
                result: Any = _read_get(conn)
            elif kind == REPLY:
                result = [proto.parse_reply(conn.readline()) for _ in range(count)]
            else:
                result = [proto.parse_incr(conn.readline()) for _ in range(count)]
            clean = True
        finally:
            if clean and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                _close(conn)
        return result

    @staticmethod
    def ready(conn: _Conn) -> bool:
        """Whether a reply has (at least partly) arrived, without waiting."""
        if conn.buf:
            return True
        readable, _, _ = select.select([conn.sock], [], [], 0)
        return bool(readable)

    @staticmethod
    def abandon(conn: _Conn) -> None:
        """Close a connection whose replies will not be read."""
        _close(conn)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


def _close(conn: _Conn) -> None:
    with contextlib.suppress(OSError):
        conn.sock.close()


def _read_get(conn: _Conn) -> dict[bytes, proto.Item]:
    parser = proto.parse_get(conn.readline())
    try:
        want = next(parser)
        while True:
            want = parser.send(conn.readline() if want == proto.ReadLine else conn.read(want + 2))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class AsyncNode:
    """An asyncio memcached server client with an idle-connection pool (one event loop).

    The caller's deadline comes from the zone's circuit dependency, which cancels the call at
    its timeout; the cancelled exchange closes its connection.
    """

    def __init__(self, address: tuple[str, int], timeout: float, max_idle: int) -> None:
        self.address = address
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(self, payload: bytes, kind: int, count: int) -> Any:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(*self.address)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clean = False
        try:
            writer.write(payload)
            if len(payload) > 65536:
                await writer.drain()
            if kind == GET:
                result: Any = await _aread_get(reader)
            elif kind == REPLY:
                result = [proto.parse_reply(await _aline(reader)) for _ in range(count)]
            else:
                result = [proto.parse_incr(await _aline(reader)) for _ in range(count)]
            clean = True
        finally:
            if clean and len(self._idle) < self.max_idle:
                self._idle.append((reader, writer))
            else:
                writer.close()
        return result

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _aline(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionResetError("memcached closed the connection")
    return line[:-2]


async def _aread_get(reader: asyncio.StreamReader) -> dict[bytes, proto.Item]:
    parser = proto.parse_get(await _aline(reader))
    try:
        want = next(parser)
        while True:
            if want == proto.ReadLine:
                want = parser.send(await _aline(reader))
            else:
                want = parser.send(await reader.readexactly(want + 2))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
