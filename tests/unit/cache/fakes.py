"""An in-memory memcached that speaks the text protocol, as nodes for unit tests.

The fake nodes hand the cache real protocol bytes, so the cache's own parser reads them.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

from resilience.cache import AsyncReplicatedCache, ReplicatedCache

_cas = itertools.count(1)


class Server:
    """A dict behind the protocol; ``fail`` makes every connect and exchange fail."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (data, flags, cas)
        self.fail = False
        self.gets = 0  # keys asked by get commands (memcached's cmd_get)
        self.get_commands = 0
        self.sets = 0
        # set: the server's replies wait for it (a slow zone), and ready() says not yet
        self.gate: threading.Event | None = None

    def handle(self, payload: bytes) -> bytes:
        if self.fail:
            raise ConnectionResetError("server down")
        out = []
        rest = payload
        while rest:
            line, rest = rest.split(b"\r\n", 1)
            cmd, *args = line.split()
            if cmd in (b"get", b"gets"):
                self.gets += len(args)
                self.get_commands += 1
                for k in args:
                    if k in self.data:
                        data, flags, cas = self.data[k]
                        tail = b" %d" % cas if cmd == b"gets" else b""
                        out.append(
                            b"VALUE %s %d %d%s\r\n%s\r\n" % (k, flags, len(data), tail, data)
                        )
                out.append(b"END\r\n")
            elif cmd in (b"set", b"add", b"replace", b"append", b"prepend", b"cas"):
                key, flags, size = args[0], int(args[1]), int(args[3])
                data, rest = rest[:size], rest[size + 2 :]
                self.sets += 1
                out.append(self._store(cmd, key, flags, data, args))
            elif cmd == b"delete":
                out.append(b"DELETED\r\n" if self.data.pop(args[0], None) else b"NOT_FOUND\r\n")
            elif cmd == b"touch":
                out.append(b"TOUCHED\r\n" if args[0] in self.data else b"NOT_FOUND\r\n")
            elif cmd in (b"incr", b"decr"):
                out.append(self._counter(cmd, args[0], int(args[1])))
            elif cmd == b"flush_all":
                self.data.clear()
                out.append(b"OK\r\n")
            else:
                out.append(b"ERROR\r\n")
        return b"".join(out)

    def _store(self, cmd: bytes, key: bytes, flags: int, data: bytes, args: list[bytes]) -> bytes:
        item = self.data.get(key)
        if cmd == b"add" and item is not None:
            return b"NOT_STORED\r\n"
        if cmd in (b"replace", b"append", b"prepend") and item is None:
            return b"NOT_STORED\r\n"
        if cmd == b"cas":
            if item is None:
                return b"NOT_FOUND\r\n"
            if item[2] != int(args[4]):
                return b"EXISTS\r\n"
        if cmd == b"append":
            assert item is not None
            data, flags = item[0] + data, item[1]
        elif cmd == b"prepend":
            assert item is not None
            data, flags = data + item[0], item[1]
        self.data[key] = (data, flags, next(_cas))
        return b"STORED\r\n"

    def _counter(self, cmd: bytes, key: bytes, delta: int) -> bytes:
        item = self.data.get(key)
        if item is None:
            return b"NOT_FOUND\r\n"
        if not item[0].isdigit():
            return b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        n = int(item[0]) + (delta if cmd == b"incr" else -delta)
        n = max(n, 0)
        self.data[key] = (b"%d" % n, item[1], next(_cas))
        return b"%d\r\n" % n


SERVERS: dict[tuple[str, int], Server] = {}
EVENTS: list[tuple[str, Server]] = []  # ("send" | "receive", server) of sync calls


def server(address: tuple[str, int]) -> Server:
    return SERVERS.setdefault(address, Server())


class FakeConn:
    """SyncConn's surface; a sent payload is handled when its replies are read."""

    def __init__(self, srv: Server, timeout: float) -> None:
        self.server = srv
        self.timeout = timeout
        self.payload = b""
        self.buf = bytearray()

    def send(self, payload: bytes, deadline: float) -> None:
        EVENTS.append(("send", self.server))
        self.payload = payload

    def receive(self, parser: Any, deadline: float) -> None:
        EVENTS.append(("receive", self.server))
        gate = self.server.gate
        if gate is not None and not gate.wait(self.timeout):
            raise TimeoutError("timed out")
        self.buf += self.server.handle(self.payload)
        assert parser.feed(self.buf), self.buf

    def ready(self) -> bool:
        gate = self.server.gate
        return gate is None or gate.is_set()

    def close(self) -> None:
        pass


class FakeNode:
    """SyncNode's surface."""

    def __init__(self, address: tuple[str, int], timeout: float, max_idle: int) -> None:
        self.server = server(address)
        self.timeout = timeout  # a gated server's reply is waited for this long, like a socket
        self.idle = 0

    def checkout(self, fresh: bool, deadline: float) -> FakeConn:
        if self.server.fail:
            raise ConnectionRefusedError("server down")
        return FakeConn(self.server, self.timeout)

    def checkin(self, conn: FakeConn) -> None:
        pass

    def drop_idle(self) -> None:
        pass

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass


class AsyncFakeConn:
    """AsyncConn's surface: the reply arrives on the next loop turn."""

    def __init__(self, srv: Server) -> None:
        self.server = srv
        self.buf = bytearray()
        self.closed = False

    def request(self, payload: bytes, parser: Any, done: Any) -> None:
        def reply() -> None:
            try:
                self.buf += self.server.handle(payload)
            except ConnectionError as exc:
                done(exc)
                return
            assert parser.feed(self.buf)
            done(None)

        asyncio.get_running_loop().call_soon(reply)

    def abort(self) -> None:
        self.closed = True


class AsyncFakeNode:
    def __init__(self, address: tuple[str, int], timeout: float, max_idle: int) -> None:
        self.server = server(address)
        self.idle = 0

    def take_idle(self) -> AsyncFakeConn | None:
        return None if self.server.fail else AsyncFakeConn(self.server)

    async def checkout(self, fresh: bool, deadline: float) -> AsyncFakeConn:
        if self.server.fail:
            raise ConnectionRefusedError("server down")
        return AsyncFakeConn(self.server)

    def checkin(self, conn: AsyncFakeConn) -> None:
        pass

    def drop_idle(self) -> None:
        pass

    def after_fork(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeCache(ReplicatedCache):
    _node_class = FakeNode  # type: ignore[assignment]


class AsyncFakeCache(AsyncReplicatedCache):
    _node_class = AsyncFakeNode  # type: ignore[assignment]


ZONES = {
    "a": ["10.0.0.1:11211", "10.0.0.2:11211"],
    "b": ["10.0.1.1:11211", "10.0.1.2:11211"],
    "c": ["10.0.2.1:11211", "10.0.2.2:11211"],
}


def zone_servers(zone: str) -> list[Server]:
    out = []
    for spec in ZONES[zone]:
        host, port = spec.split(":")
        out.append(server((host, int(port))))
    return out


def zone_gets(zone: str) -> int:
    return sum(s.gets for s in zone_servers(zone))


def zone_has(zone: str, key: bytes) -> bool:
    return any(key in s.data for s in zone_servers(zone))


def fail_zone(zone: str, fail: bool = True) -> None:
    for s in zone_servers(zone):
        s.fail = fail
