"""What the sync and async caches share: construction, zones, names, key mapping, status."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..circuit import Dependency, Policy, Registry, State, registry
from ..errors import ConfigError
from ._async_node import AsyncNode
from ._catchup import CatchUp
from ._config import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_BATCH_WINDOW,
    DEFAULT_CATCH_UP_SIZE,
    DEFAULT_CONSECUTIVE_FAILURES,
    DEFAULT_FAILURE_RATE,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_MIN_CALLS,
    DEFAULT_OPEN_DURATION,
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    DEFAULT_WRITE_POLICY,
    DEFAULT_WRITE_WORKERS,
    CacheConfig,
    WritePolicy,
)
from ._core import CacheCore
from ._fence import Fence
from ._metrics import metrics_for, zone_is_up
from ._serde import JsonSerde, Serde
from ._stats import CacheStats
from ._sync_node import SyncNode
from ._zones import Zone

__all__ = ["CacheBase"]

N = TypeVar("N", SyncNode, AsyncNode)
ServerSpec = str | tuple[str, int]


class CacheBase(Generic[N]):
    """A cache replicated over availability zones (EVCache-style); see the two drivers.

    Args:
        zones: zone name -> memcached servers (``"host:port"`` or ``(host, port)``); each zone
            holds a full copy of the data, spread over its servers by rendezvous hashing.
        name: the cache's name (required); zone ``z`` is the circuit dependency
            ``cache.<name>.<z>`` in the registry, so FIT recipes and flags can target it and
            metrics are labelled by it. Two live caches with one name must have the same zones
            (``ConfigError`` otherwise): they share breakers, so they must share servers.
        local_zone: the zone reads try first (default: the first zone of ``zones``).
        read_order: the remote zones reads try after the local one, in order (default: the
            others in the order of ``zones``). A zone left out is written but never read.
        timeout: seconds one zone call may take once admitted (default 0.05): one deadline for
            sending the request and reading the whole reply; the zone dependency's timeout.
        default_ttl: seconds an item lives when a write gives no ``ttl`` (default 900;
            0 means no expiry).
        write_policy: when a write counts as done: ``"all_minus_1"`` (default: every zone
            but one, and the local zone has answered), ``"all"``, ``"quorum"`` (more than
            half) or ``"local"``. Zones not yet done when the call returns finish in the
            background and their failures are still counted.
        read_repair: after a hit in a remote zone, copy the value into the local zone with
            ``add`` if the local zone answered with a miss (default True).
        repair_ttl: ttl of repaired items (default None: ``default_ttl``).
        serde: how values are stored (default :class:`JsonSerde`; :class:`PickleSerde` on
            request).
        hash_long_keys: replace keys over 250 bytes or with whitespace/control characters by
            ``b"\\xffsha256:" + hexdigest`` instead of raising ``InvalidKeyError`` (default
            False); no literal key can take that form.
        max_value_size: largest serialised value in bytes (default 1,000,000); larger values
            raise ``ValueTooLargeError`` before anything is sent.
        max_concurrent: concurrent calls per zone, and idle connections kept per server
            (default 64); past it a call waits for a permit (see ``acquire_timeout``).
        min_calls / failure_rate / open_duration: the zone breakers' policy (defaults 5 calls,
            0.5, 3.0 seconds).
        consecutive_failures: a zone's breaker also opens after this many failed or timed-out
            calls in a row (default 3, mcrouter's TKO; None turns it off).
        write_workers: threads that finish a write's remaining zones after the call returned
            (sync cache only; default 8).
        acquire_timeout: seconds a call may wait for a zone permit or a connection (default
            1.0); past it that zone is skipped for the call, which is the client's own limit
            and never counts against the zone's circuit.
        batch_window: async cache: gets issued within this many seconds (default 0: the same
            event-loop turn) share one multi-get per server; None turns batching off.
        max_batch: keys per batched multi-get (default 256).
        catch_up_size: keys remembered per zone that missed writes (default 10,000), deleted
            there when it is healthy again; past it the oldest are dropped and counted.
        registry: the resilience registry holding the zone dependencies (default: the
            process-wide one).
    """

    _node_class: type[N]
    _gate_class: Callable[[str, int], Any]

    def __init__(
        self,
        zones: Mapping[str, Sequence[ServerSpec]],
        *,
        name: str,
        local_zone: str | None = None,
        read_order: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        default_ttl: int = DEFAULT_TTL,
        write_policy: WritePolicy = DEFAULT_WRITE_POLICY,
        read_repair: bool = True,
        repair_ttl: int | None = None,
        serde: Serde | None = None,
        hash_long_keys: bool = False,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        min_calls: int = DEFAULT_MIN_CALLS,
        failure_rate: float = DEFAULT_FAILURE_RATE,
        open_duration: float = DEFAULT_OPEN_DURATION,
        consecutive_failures: int | None = DEFAULT_CONSECUTIVE_FAILURES,
        write_workers: int = DEFAULT_WRITE_WORKERS,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
        batch_window: float | None = DEFAULT_BATCH_WINDOW,
        max_batch: int = DEFAULT_MAX_BATCH,
        catch_up_size: int = DEFAULT_CATCH_UP_SIZE,
        registry: Registry | None = None,
    ) -> None:
        self.config = cfg = CacheConfig(
            zones=zones,
            name=name,
            local_zone=local_zone or "",
            read_order=tuple(read_order) if read_order else (),
            timeout=timeout,
            default_ttl=default_ttl,
            write_policy=write_policy,
            read_repair=read_repair,
            repair_ttl=repair_ttl,
            serde=serde if serde is not None else JsonSerde(),
            hash_long_keys=hash_long_keys,
            max_value_size=max_value_size,
            max_concurrent=max_concurrent,
            min_calls=min_calls,
            failure_rate=failure_rate,
            open_duration=open_duration,
            consecutive_failures=consecutive_failures,
            write_workers=write_workers,
            acquire_timeout=acquire_timeout,
            batch_window=batch_window,
            max_batch=max_batch,
            catch_up_size=catch_up_size,
        )
        self._registry = reg = registry if registry is not None else _default_registry()
        self._closed = False
        # caches of one name in a process (a sync and an async twin) share zone breakers, so
        # they share what each zone missed and the writes in flight too: one's writes are
        # never read stale by the other
        catch_ups, fence = _claim(reg, self, catch_up_size)
        self._fence = fence
        policy = Policy(
            timeout=timeout,
            # zone calls run on the caller's thread or loop: the cache enforces the deadline,
            # and a thread hand-off would cost more than the memcached round trip itself
            isolation="semaphore",
            max_concurrent=max_concurrent,
            min_calls=min_calls,
            failure_rate=failure_rate,
            open_duration=open_duration,
            consecutive_failures=consecutive_failures,
        )
        self._zones: dict[str, Zone[N]] = {}
        for zone, servers in cfg.zones.items():
            nodes = {
                f"{h}:{p}": self._node_class((h, p), timeout, max_concurrent) for h, p in servers
            }
            dep = reg.dependency(f"cache.{name}.{zone}", policy)
            gate = self._gate_class(dep.name, max_concurrent)
            self._zones[zone] = Zone(zone, nodes, dep, gate, catch_ups[zone])
        self._core = CacheCore(cfg, catch_ups, fence)
        self._loads: dict[Any, Any] = {}
        self._loads_lock = threading.Lock()
        metrics_for(reg).add(self)
        _LIVE.add(self)
        self._setup()

    def _setup(self) -> None:
        """What a driver adds once the zones exist (write threads, background tasks)."""

    # -- introspection --------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def stats(self) -> CacheStats:
        return self._core.stats

    def dependency(self, zone: str) -> Dependency:
        """The circuit dependency of ``zone`` (force it open to take the zone out)."""
        return self._zones[zone].dependency

    def zone_states(self) -> dict[str, State]:
        return {z: zone.dependency.state for z, zone in self._zones.items()}

    def catch_up_status(self) -> dict[str, dict[str, int]]:
        return {z: zone.catch_up.status() for z, zone in self._zones.items()}

    def in_flight(self) -> dict[str, int]:
        """Zone permits held right now, per zone (0 everywhere when the cache is idle)."""
        return {z: zone.gate.in_use for z, zone in self._zones.items()}

    def status(self) -> dict[str, Any]:
        """The cache as JSON-able data.

        ``zones`` maps each zone to ``{"state", "up", "hit_ratio", "errors", "hits",
        "misses", "read_errors", "undecodable", "writes", "write_errors", "client_errors",
        "remote_hits", "read_repairs", "write_failures", "acquire_timeouts", "in_flight",
        "waiting", "catch_up": {"pending", "held", "queued", "replayed", "overflow", "limit"},
        "servers", "dependency"}``; ``hit_ratio`` is hits / (hits + misses) of the reads the
        zone answered (None before any) and ``errors`` its failed reads and writes.
        """
        stats = self._core.stats
        zones = {}
        for z, zone in self._zones.items():
            state = zone.dependency.state
            counts = stats.zone_counts(z)
            answered = counts["hits"] + counts["misses"]
            ratio = counts["hits"] / answered if answered else None
            zones[z] = {
                "state": state.value,
                "up": zone_is_up(state),
                "hit_ratio": ratio,
                "errors": counts["read_errors"] + counts["write_errors"],
                **counts,
                "remote_hits": stats.remote_hits[z],
                "read_repairs": stats.read_repairs[z],
                "write_failures": stats.write_failures[z],
                "acquire_timeouts": stats.acquire_timeouts[z],
                "in_flight": zone.gate.in_use,
                "waiting": zone.gate.waiting,
                "catch_up": zone.catch_up.status(),
                "servers": list(zone.nodes),
                "dependency": zone.dependency.name,
            }
        return {
            "name": self.name,
            "local_zone": self.config.local_zone,
            "read_order": list(self.config.zone_order),
            "write_policy": self.config.write_policy,
            "read_repair": self.config.read_repair,
            "timeout": self.config.timeout,
            "zones": zones,
            "degraded_writes": stats.degraded_writes,
            "dedup_hits": stats.dedup_hits,
            "singleflight_shares": stats.singleflight_shares,
            "batches": stats.batches,
            "batched_gets": stats.batched_gets,
        }

    def __repr__(self) -> str:
        zones, local = list(self._zones), self.config.local_zone
        return f"<{type(self).__name__} {self.name!r} zones={zones} local={local!r}>"

    # -- helpers shared by the drivers ----------------------------------------------------

    def _keys(
        self, keys: Iterable[str | bytes]
    ) -> tuple[list[bytes], dict[bytes, list[str | bytes]]]:
        """Encoded keys (deduplicated, in order) and the caller's keys each one stands for."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("keys must be an iterable of keys, not a single str or bytes")
        encode = self._core.key
        users: dict[bytes, list[str | bytes]] = {}
        for key in keys:
            users.setdefault(encode(key), []).append(key)
        return list(users), users

    @staticmethod
    def _by_user_key(
        found: dict[bytes, Any], users: dict[bytes, list[str | bytes]]
    ) -> dict[Any, Any]:
        return {user: value for key, value in found.items() for user in users[key]}

    def _items(
        self, mapping: Mapping[str | bytes, Any]
    ) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
        """Encoded keys -> stored items, and -> the values (for the request memo)."""
        items: dict[bytes, Any] = {}
        values: dict[bytes, Any] = {}
        for user_key, value in mapping.items():
            key = self._core.key(user_key)
            items[key] = self._core.encode(user_key, value)
            values[key] = value
        return items, values

    def _flush_zones(self, zones: Iterable[str]) -> tuple[str, ...]:
        if isinstance(zones, str):
            raise ConfigError("zones", f"must be a list of zone names, got {zones!r}")
        names = tuple(dict.fromkeys(zones))
        unknown = [z for z in names if z not in self._zones]
        if not names or unknown:
            raise ConfigError(
                "zones", f"flush_all needs zones among {list(self._zones)}, got {list(names)}"
            )
        return names

    def _raw(self, value: str | bytes) -> tuple[bytes, int]:
        """append/prepend data: bytes or str, added to the stored bytes as they are."""
        if isinstance(value, bytes):
            return value, 0
        if isinstance(value, str):
            return value.encode(), 0
        raise TypeError(f"append/prepend take str or bytes, not {type(value).__name__}")

    def _mark_closed(self) -> None:
        self._closed = True
        _release(self._registry, self)

    def _after_fork_in_child(self) -> None:
        """Drop what the parent owned: connections, permits, tickets, locks."""
        self._core.stats.after_fork()
        self._fence.after_fork()
        self._loads = {}
        self._loads_lock = threading.Lock()
        for zone in self._zones.values():
            zone.gate.after_fork()
            zone.catch_up.after_fork()
            for node in zone.nodes.values():
                node.after_fork()
            tickets, zone.tickets = list(zone.tickets), set()
            for ticket in tickets:
                with contextlib.suppress(RuntimeError):  # ended as the fork happened
                    ticket.cancel()  # the threads that held them do not exist in the child


# -- names: one set of zones per cache name and registry --------------------------------

_Claim = tuple[Any, "weakref.WeakSet[Any]", dict[str, CatchUp], Fence]
_claims: weakref.WeakKeyDictionary[Registry, dict[str, _Claim]] = weakref.WeakKeyDictionary()
_claims_lock = threading.Lock()


def _claim(
    reg: Registry, cache: CacheBase[Any], catch_up_size: int
) -> tuple[dict[str, CatchUp], Fence]:
    """Bind the cache's name to its zones; the name's shared catch-up queues and fence."""
    spec = cache.config.zones
    with _claims_lock:
        names = _claims.setdefault(reg, {})
        held = names.get(cache.name)
        if held is not None and held[0] != spec and any(not c._closed for c in held[1]):
            raise ConfigError(
                "name",
                f"a cache named {cache.name!r} with other zones exists ({dict(held[0])}); "
                "caches sharing a name share zone breakers and metrics: give this one its own "
                "name",
            )
        if held is None or held[0] != spec:
            queues = {zone: CatchUp(catch_up_size) for zone in spec}
            held = names[cache.name] = (spec, weakref.WeakSet(), queues, Fence())
        held[1].add(cache)
        return held[2], held[3]


def _release(reg: Registry, cache: CacheBase[Any]) -> None:
    with _claims_lock:
        held = _claims.get(reg, {}).get(cache.name)
        if held is not None:
            held[1].discard(cache)


def _default_registry() -> Registry:
    return registry()


# -- fork: a child must never use the parent's sockets ----------------------------------

_LIVE: weakref.WeakSet[CacheBase[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _claims_lock
    _claims_lock = threading.Lock()
    for cache in list(_LIVE):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
