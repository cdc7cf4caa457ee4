"""A zone: its servers, which server holds a key, and what to send them for each operation.

A zone *plans* an operation as exchanges (server, payload, reply kind, reply count) and a
function that combines the replies; ``run_sync`` / ``run_async`` perform the plan, and
``send_sync`` sends it without reading, so a write can be pipelined to every zone from one
thread (send to all, then read every reply). Keys are
placed with pymemcache's rendezvous hash over ``"host:port"`` node names, exactly as a
pymemcache ``HashClient`` given the same servers and string keys places them, so both clients
find each other's data. Unlike ``HashClient``, a failing server is never dropped from the ring
(which would move its keys and bring stale data back when it returns): the error goes up to
the zone's circuit breaker, and the cache reads another zone instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pymemcache.client.rendezvous import RendezvousHash

from ..circuit import Dependency
from . import _protocol as proto
from ._nodes import GET, INCR, REPLY, AsyncNode, SyncNode

__all__ = ["Sent", "Zone", "run_async", "run_sync", "send_sync"]

N = TypeVar("N", SyncNode, AsyncNode)
Exchange = tuple[Any, bytes, int, int]
Plan = tuple[list[Exchange], Callable[[list[Any]], Any]]

_PLACEMENT_MEMO = 65536  # keys whose server is remembered (pure-Python hashing is O(servers))


def _first(replies: list[Any]) -> Any:
    return replies[0][0]


def _merge(replies: list[Any]) -> Any:
    found: dict[bytes, proto.Item] = {}
    for hits in replies:
        found.update(hits)
    return found


class Zone(Generic[N]):
    """One availability zone: a full copy of the data spread over ``nodes``."""

    def __init__(self, name: str, nodes: dict[str, N], dependency: Dependency) -> None:
        self.name = name
        self.nodes: dict[str, N] = nodes
        self.dependency = dependency
        self._hasher = RendezvousHash()
        for node_id in nodes:
            self._hasher.add_node(node_id)
        self._only: N | None = next(iter(nodes.values())) if len(nodes) == 1 else None
        self._placed: dict[bytes, N] = {}

    def node(self, key: bytes) -> N:
        """The server that holds ``key``."""
        if self._only is not None:
            return self._only
        node = self._placed.get(key)
        if node is None:
            if len(self._placed) >= _PLACEMENT_MEMO:
                self._placed.clear()
            node = self._placed[key] = self.nodes[self._hasher.get_node(key.decode("latin-1"))]
        return node

    def group(self, keys: Sequence[bytes]) -> dict[N, list[bytes]]:
        groups: dict[N, list[bytes]] = {}
        for key in keys:
            groups.setdefault(self.node(key), []).append(key)
        return groups

    def plan(self, op: str, args: tuple[Any, ...]) -> Plan:
        """The exchanges for ``op`` and how to combine their replies into the zone's answer."""
        if op == "get":
            key = args[0]
            return [(self.node(key), proto.get_cmd([key]), GET, 1)], lambda r: r[0].get(key)
        if op == "get_many":
            return [
                (node, proto.get_cmd(keys), GET, 1) for node, keys in self.group(args[0]).items()
            ], _merge
        if op in ("set", "add"):
            key, (data, flags), ttl = args
            verb = op.encode()
            return [
                (self.node(key), proto.store_cmd(verb, key, data, flags, ttl), REPLY, 1)
            ], _first
        if op in ("set_many", "add_many"):
            items, ttl = args
            verb = op[:3].encode()
            exchanges: list[Exchange] = []
            order: list[list[bytes]] = []
            for node, keys in self.group(list(items)).items():
                payload = b"".join(
                    proto.store_cmd(verb, k, items[k][0], items[k][1], ttl) for k in keys
                )
                exchanges.append((node, payload, REPLY, len(keys)))
                order.append(keys)

            def not_stored(replies: list[Any]) -> list[bytes]:
                return [
                    k
                    for keys, r in zip(order, replies, strict=True)
                    for k, ok in zip(keys, r, strict=True)
                    if not ok
                ]

            return exchanges, not_stored
        if op == "delete":
            key = args[0]
            return [(self.node(key), proto.delete_cmd(key), REPLY, 1)], _first
        if op == "delete_many":
            return [
                (node, b"".join(proto.delete_cmd(k) for k in keys), REPLY, len(keys))
                for node, keys in self.group(args[0]).items()
            ], lambda r: None
        if op == "touch":
            key, ttl = args
            return [(self.node(key), proto.touch_cmd(key, ttl), REPLY, 1)], _first
        if op in ("incr", "decr"):
            key, delta = args
            return [(self.node(key), proto.incr_cmd(op.encode(), key, delta), INCR, 1)], _first
        raise ValueError(f"unknown zone operation {op!r}")


class Sent:
    """A zone operation whose requests are sent: ``receive`` reads and combines the replies."""

    __slots__ = ("_combine", "_waiting")

    def __init__(
        self, waiting: list[tuple[SyncNode, Any, int, int]], combine: Callable[[list[Any]], Any]
    ) -> None:
        self._waiting = waiting
        self._combine = combine

    def ready(self) -> bool:
        """Whether every server's reply has started to arrive (reading it will not wait long)."""
        return all(node.ready(conn) for node, conn, _, _ in self._waiting)

    def receive(self) -> Any:
        """The zone's answer; each read waits at most the socket timeout."""
        waiting, self._waiting = self._waiting, []
        replies = []
        done = 0
        try:
            for node, conn, kind, n in waiting:
                done += 1  # receive() closes its own connection when it fails
                replies.append(node.receive(conn, kind, n))
        except BaseException:
            for node, conn, _, _ in waiting[done:]:
                node.abandon(conn)
            raise
        return self._combine(replies)

    def abandon(self) -> None:
        """Drop the replies: their connections are closed, never reused."""
        waiting, self._waiting = self._waiting, []
        for node, conn, _, _ in waiting:
            node.abandon(conn)


def send_sync(zone: Zone[SyncNode], op: str, args: tuple[Any, ...]) -> Sent:
    """Send one zone operation to every server it needs, without reading the replies."""
    exchanges, combine = zone.plan(op, args)
    waiting: list[tuple[SyncNode, Any, int, int]] = []
    try:
        for node, payload, kind, n in exchanges:
            waiting.append((node, node.send(payload), kind, n))
    except BaseException:
        for node, conn, _, _ in waiting:
            node.abandon(conn)
        raise
    return Sent(waiting, combine)


def run_sync(zone: Zone[SyncNode], op: str, args: tuple[Any, ...]) -> Any:
    """Perform one zone operation on the calling thread (its servers are asked at once)."""
    return send_sync(zone, op, args).receive()


async def run_async(zone: Zone[AsyncNode], op: str, args: tuple[Any, ...]) -> Any:
    """Perform one zone operation; servers of the zone are asked one after another."""
    exchanges, combine = zone.plan(op, args)
    return combine([await node.exchange(payload, kind, n) for node, payload, kind, n in exchanges])
