"""An in-memory memcached that speaks the text protocol, as nodes for unit tests."""

from __future__ import annotations

import threading
from typing import Any

from resilience.cache import AsyncReplicatedCache, ReplicatedCache
from resilience.cache._nodes import GET


class Server:
    """A dict behind the protocol; ``fail`` makes every exchange raise ConnectionError."""

    def __init__(self) -> None:
        self.data: dict[bytes, tuple[bytes, int]] = {}
        self.fail = False
        self.gets = 0  # keys asked by get commands (memcached's cmd_get)
        self.sets = 0
        # set: the server's replies wait for it (a slow zone), and ready() says not yet
        self.gate: threading.Event | None = None

    def handle(self, payload: bytes, kind: int, count: int) -> Any:
        if self.fail:
            raise ConnectionRefusedError("server down")
        replies: list[Any] = []
        rest = payload
        while rest:
            line, rest = rest.split(b"\r\n", 1)
            cmd, *args = line.split()
            if cmd == b"get":
                self.gets += len(args)
                return {k: self.data[k] for k in args if k in self.data}
            if cmd in (b"set", b"add"):
                key, flags, _ttl, size = args[0], int(args[1]), args[2], int(args[3])
                data, rest = rest[:size], rest[size + 2 :]
                self.sets += 1
                if cmd == b"add" and key in self.data:
                    replies.append(False)
                else:
                    self.data[key] = (data, flags)
                    replies.append(True)
            elif cmd == b"delete":
                replies.append(self.data.pop(args[0], None) is not None)
            elif cmd == b"touch":
                replies.append(args[0] in self.data)
            elif cmd in (b"incr", b"decr"):
                item = self.data.get(args[0])
                if item is None:
                    replies.append(None)
                else:
                    n = int(item[0]) + (int(args[1]) if cmd == b"incr" else -int(args[1]))
                    self.data[args[0]] = (b"%d" % max(n, 0), item[1])
                    replies.append(max(n, 0))
        assert kind != GET and len(replies) == count, (kind, replies, count)
        return replies


SERVERS: dict[tuple[str, int], Server] = {}
EVENTS: list[tuple[str, Server]] = []  # ("send" | "receive", server) of sync pipelined calls


def server(address: tuple[str, int]) -> Server:
    return SERVERS.setdefault(address, Server())


class FakeNode:
    """SyncNode's surface; a sent payload is handled when its replies are read."""

    def __init__(self, address: tuple[str, int], timeout: float, max_idle: int) -> None:
        self.server = server(address)
        self.timeout = timeout  # a gated server's reply is waited for this long, like a socket

    def exchange(self, payload: bytes, kind: int, count: int) -> Any:
        return self.server.handle(payload, kind, count)

    def send(self, payload: bytes) -> bytes:
        EVENTS.append(("send", self.server))
        return payload

    def receive(self, conn: bytes, kind: int, count: int) -> Any:
        EVENTS.append(("receive", self.server))
        gate = self.server.gate
        if gate is not None and not gate.wait(self.timeout):
            raise TimeoutError("timed out")
        return self.server.handle(conn, kind, count)

    def ready(self, conn: bytes) -> bool:
        gate = self.server.gate
        return gate is None or gate.is_set()

    @staticmethod
    def abandon(conn: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class AsyncFakeNode:
    def __init__(self, address: tuple[str, int], timeout: float, max_idle: int) -> None:
        self.server = server(address)

    async def exchange(self, payload: bytes, kind: int, count: int) -> Any:
        return self.server.handle(payload, kind, count)

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
