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

__all__ = ["Combine", "Exchange", "Plan", "Zone", "first", "one_key", "planner"]

N = TypeVar("N", SyncNode, AsyncNode)
Exchange = tuple[Any, bytes, Parser]
Combine = Callable[[list[Any]], Any]
Plan = tuple[list[Exchange], Combine]

_PLACEMENT_MEMO = 65536  # keys whose server is remembered (pure-Python hashing is O(servers))


def first(replies: list[Any]) -> Any:
    """The one reply of a one-key operation (``settle`` takes it without calling this)."""
    return replies[0][0]


def _merge(replies: list[Any]) -> Any:
    found: dict[bytes, Any] = {}
    for hits in replies:
        found.update(hits)
    return found


def _all_true(replies: list[Any]) -> bool:
    return all(all(r) for r in replies)


_VERBS = {op: op.encode() for op in ("set", "add", "replace", "append", "prepend", "incr", "decr")}


def one_key(op: str, args: tuple[Any, ...]) -> tuple[bytes, bytes, int, Combine] | None:
    """``(key, request, reply kind, combine)`` of a one-key write, the same in every zone (the
    request is built once per write); None for the other operations."""
    if op == "set" or op == "add" or op == "replace" or op == "append" or op == "prepend":
        key, (data, flags), ttl = args
        return key, proto.store_cmd(_VERBS[op], key, data, flags, ttl), proto.REPLY, first
    if op == "delete":
        key = args[0]
        return key, proto.delete_cmd(key), proto.REPLY, first
    if op == "touch":
        key, ttl = args
        return key, proto.touch_cmd(key, ttl), proto.REPLY, first
    if op == "incr" or op == "decr":
        key, delta = args
        return key, proto.incr_cmd(_VERBS[op], key, delta), proto.INCR, first
    if op == "cas":
        key, (data, flags), ttl, token = args
        return key, proto.cas_cmd(key, data, flags, ttl, token), proto.CAS, first
    return None


def planner(op: str, args: tuple[Any, ...]) -> Callable[[Zone[Any]], Plan]:
    """How to plan ``op`` in any zone; a one-key write's request is built once, not per zone."""
    one = one_key(op, args)
    if one is None:
        return lambda zone: zone.plan(op, args)
    key, payload, kind, combine = one

    def plan(zone: Zone[Any]) -> Plan:
        return [(zone.node(key), payload, Parser(kind))], combine

    return plan


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
        one = one_key(op, args)
        if one is not None:
            key, payload, kind, combine = one
            return [(self.node(key), payload, Parser(kind))], combine
        if op in ("get_many", "gets_many"):
            kind = proto.GET if op == "get_many" else proto.GETS
            gets = op == "gets_many"
            return [
                (node, proto.get_cmd(keys, gets), Parser(kind))
                for node, keys in self.group(args[0]).items()
            ], _merge
        if op in ("set_many", "add_many"):
            return self._store_many(op[:3].encode(), *args)
        if op == "delete_many":
            return [
                (node, b"".join(proto.delete_cmd(k) for k in keys), Parser(proto.REPLY, len(keys)))
                for node, keys in self.group(args[0]).items()
            ], lambda r: None
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
