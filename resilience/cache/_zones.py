"""A zone: its servers, which server holds a key, and what to send them for each operation.

A zone *plans* an operation as exchanges (server, payload, parser) and a function that
combines the replies; the drivers run the plan. Unlike pymemcache's ``HashClient``, a failing
server is never dropped from the ring (which would move its keys and bring stale data back when
it returns): the error goes up to the zone's circuit breaker, and the cache reads another zone.
Key placement is described in ``_keys``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pymemcache.client.rendezvous import RendezvousHash

from ..circuit import Dependency
from . import _protocol as proto
from ._async_node import AsyncNode
from ._catchup import CatchUp
from ._keys import placement_text
from ._protocol import Parser
from ._sync_node import SyncNode

__all__ = ["Exchange", "Plan", "Zone"]

N = TypeVar("N", SyncNode, AsyncNode)
Exchange = tuple[Any, bytes, Parser]
Plan = tuple[list[Exchange], Callable[[list[Any]], Any]]

_PLACEMENT_MEMO = 65536  # keys whose server is remembered (pure-Python hashing is O(servers))


def _first(replies: list[Any]) -> Any:
    return replies[0][0]


def _merge(replies: list[Any]) -> Any:
    found: dict[bytes, Any] = {}
    for hits in replies:
        found.update(hits)
    return found


def _all_true(replies: list[Any]) -> bool:
    return all(all(r) for r in replies)


class Zone(Generic[N]):
    """One availability zone: a full copy of the data spread over ``nodes``.

    ``gate`` holds the zone's permits, ``catch_up`` the keys it missed while failing.
    """

    def __init__(
        self, name: str, nodes: dict[str, N], dependency: Dependency, gate: Any, catch_up: CatchUp
    ) -> None:
        self.name = name
        self.nodes: dict[str, N] = nodes
        self.dependency = dependency
        self.gate = gate
        self.catch_up = catch_up
        self.tickets: set[Any] = set()  # tickets not yet ended (a forked child cancels them)
        self.deadlines: Any = None  # async calls' expiry (``_async_call.Deadlines``)
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
            node = self._placed[key] = self.nodes[self._hasher.get_node(placement_text(key))]
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
            return [(self.node(key), proto.get_cmd([key]), Parser(proto.GET))], lambda r: r[0].get(
                key
            )
        if op in ("get_many", "gets_many"):
            kind = proto.GET if op == "get_many" else proto.GETS
            gets = op == "gets_many"
            return [
                (node, proto.get_cmd(keys, gets), Parser(kind))
                for node, keys in self.group(args[0]).items()
            ], _merge
        if op in ("set", "add", "replace", "append", "prepend"):
            key, (data, flags), ttl = args
            cmd = proto.store_cmd(op.encode(), key, data, flags, ttl)
            return [(self.node(key), cmd, Parser(proto.REPLY))], _first
        if op == "cas":
            key, (data, flags), ttl, token = args
            cmd = proto.cas_cmd(key, data, flags, ttl, token)
            return [(self.node(key), cmd, Parser(proto.CAS))], _first
        if op in ("set_many", "add_many"):
            return self._store_many(op[:3].encode(), *args)
        if op == "delete":
            key = args[0]
            return [(self.node(key), proto.delete_cmd(key), Parser(proto.REPLY))], _first
        if op == "delete_many":
            return [
                (node, b"".join(proto.delete_cmd(k) for k in keys), Parser(proto.REPLY, len(keys)))
                for node, keys in self.group(args[0]).items()
            ], lambda r: None
        if op == "touch":
            key, ttl = args
            return [(self.node(key), proto.touch_cmd(key, ttl), Parser(proto.REPLY))], _first
        if op in ("incr", "decr"):
            key, delta = args
            cmd = proto.incr_cmd(op.encode(), key, delta)
            return [(self.node(key), cmd, Parser(proto.INCR))], _first
        if op == "flush_all":
            return [
                (node, proto.flush_cmd(args[0]), Parser(proto.OK)) for node in self.nodes.values()
            ], _all_true
        raise ValueError(f"unknown zone operation {op!r}")

    def _store_many(self, verb: bytes, items: dict[bytes, proto.Item], ttl: int) -> Plan:
        exchanges: list[Exchange] = []
        order: list[list[bytes]] = []
        for node, keys in self.group(list(items)).items():
            payload = b"".join(
                proto.store_cmd(verb, k, items[k][0], items[k][1], ttl) for k in keys
            )
            exchanges.append((node, payload, Parser(proto.REPLY, len(keys))))
            order.append(keys)

        def not_stored(replies: list[Any]) -> list[bytes]:
            return [
                k
                for keys, r in zip(order, replies, strict=True)
                for k, ok in zip(keys, r, strict=True)
                if not ok
            ]

        return exchanges, not_stored
