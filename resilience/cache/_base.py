"""What the sync and async caches share: construction, zones, key mapping, status."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..circuit import MISSING, Dependency, Guard, Policy, Registry, State, registry
from ._config import (
    DEFAULT_CONSECUTIVE_FAILURES,
    DEFAULT_FAILURE_RATE,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_MIN_CALLS,
    DEFAULT_NAME,
    DEFAULT_OPEN_DURATION,
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    DEFAULT_WRITE_WORKERS,
    CacheConfig,
    WritePolicy,
)
from ._core import CacheCore, CacheStats
from ._metrics import metrics_for, zone_is_up
from ._nodes import AsyncNode, SyncNode
from ._serde import JsonSerde, Serde
from ._zones import Zone

__all__ = ["DEFAULT_LOADER_CONCURRENCY", "DEFAULT_LOADER_TIMEOUT", "CacheBase", "FromFallback"]

N = TypeVar("N", SyncNode, AsyncNode)
ServerSpec = str | tuple[str, int]

DEFAULT_LOADER_CONCURRENCY = 10
DEFAULT_LOADER_TIMEOUT = 1.0


class FromFallback:
    """A loader's fallback value: returned to callers, never written to the cache."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class CacheBase(Generic[N]):
    """A cache replicated over availability zones (EVCache-style); see the two drivers.

    Args:
        zones: zone name -> memcached servers (``"host:port"`` or ``(host, port)``); each zone
            holds a full copy of the data, spread over its servers by rendezvous hashing.
        local_zone: the zone reads try first (default: the first zone of ``zones``).
        read_order: the remote zones reads try after the local one, in order (default: the
            others in the order of ``zones``). A zone left out is written but never read.
        name: the cache's name (default ``"default"``); zone ``z`` is the circuit dependency
            ``cache.<name>.<z>`` in the registry, so FIT recipes and flags can target it.
        timeout: seconds one zone call may take (default 0.05): connect and read timeout of
            the sockets and the zone dependency's policy timeout.
        default_ttl: seconds an item lives when a write gives no ``ttl`` (default 900;
            0 means no expiry).
        write_policy: when a write counts as done: ``"all"`` zones acknowledged (default),
            a ``"quorum"`` (more than half), or the ``"local"`` zone. Zones not yet done when
            the call returns finish in the background and their failures are still counted.
        read_repair: after a hit in a remote zone, copy the value into the local zone with
            ``add`` if the local zone answered with a miss (default True).
        repair_ttl: ttl of repaired items (default None: ``default_ttl``; the remote item's own
            expiry is not known to a text-protocol get).
        serde: how values are stored (default :class:`JsonSerde`; :class:`PickleSerde` on
            request).
        hash_long_keys: replace keys over 250 bytes or with whitespace/control characters by
            their SHA-256 instead of raising ``InvalidKeyError`` (default False).
        max_value_size: largest serialised value in bytes (default 1,000,000, under
            memcached's 1 MiB item limit); larger values raise ``ValueTooLargeError`` before
            anything is sent.
        max_concurrent: concurrent calls per zone, and idle connections kept per server
            (default 64); past it a zone call is rejected and the next zone is read.
        min_calls / failure_rate / open_duration: the zone breakers' policy (defaults 5 calls,
            0.5, 3.0 seconds): a zone failing half of at least 5 calls in 10 s is skipped for
            3 s, then probed by one trial call.
        consecutive_failures: a zone's breaker also opens after this many failed or timed-out
            calls in a row, whatever its window holds (default 3, mcrouter's TKO; None turns
            it off). Without it a zone that stalls behind heavy healthy traffic stays closed
            until the window's failure rate catches up, seconds of reads waiting for the
            timeout.
        write_workers: threads that finish a ``"quorum"`` or ``"local"`` write's remaining
            zones after the call returned (sync cache only; default 8). The caller's thread
            pipelines every write itself: it sends to all zones, then reads the replies.
        registry: the resilience registry holding the zone dependencies (default: the
            process-wide one).
    """

    _node_class: type[N]

    def __init__(
        self,
        zones: Mapping[str, Sequence[ServerSpec]],
        *,
        local_zone: str | None = None,
        read_order: Sequence[str] | None = None,
        name: str = DEFAULT_NAME,
        timeout: float = DEFAULT_TIMEOUT,
        default_ttl: int = DEFAULT_TTL,
        write_policy: WritePolicy = "all",
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
        registry: Registry | None = None,
    ) -> None:
        self.config = CacheConfig(
            zones=zones,
            local_zone=local_zone or "",
            read_order=tuple(read_order) if read_order else (),
            name=name,
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
        )
        self._core = CacheCore(self.config)
        self._registry = reg = registry if registry is not None else _default_registry()
        policy = Policy(
            timeout=timeout,
            # sync zone calls run on the caller's thread: the socket timeouts bound them, and
            # a thread hand-off would cost more than the memcached round trip itself
            isolation="semaphore",
            max_concurrent=max_concurrent,
            min_calls=min_calls,
            failure_rate=failure_rate,
            open_duration=open_duration,
            consecutive_failures=consecutive_failures,
        )
        self._zones: dict[str, Zone[N]] = {}
        for zone, servers in self.config.zones.items():
            nodes = {
                f"{h}:{p}": self._node_class((h, p), timeout, max_concurrent) for h, p in servers
            }
            dep = reg.dependency(f"cache.{name}.{zone}", policy)
            self._zones[zone] = Zone(zone, nodes, dep)
        self._loads: dict[Hashable, Any] = {}
        self._loads_lock = threading.Lock()
        self._closed = False
        metrics_for(reg).add(self)

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

    def status(self) -> dict[str, Any]:
        """The cache as JSON-able data: zones with breaker state and counters, and settings."""
        stats = self._core.stats
        zones = {}
        for z, zone in self._zones.items():
            state = zone.dependency.state
            counts = stats.zone_counts(z)
            answered = counts.get("hits", 0) + counts.get("misses", 0)
            zones[z] = {
                "dependency": zone.dependency.name,
                "state": state.value,
                "up": zone_is_up(state),
                "servers": list(zone.nodes),
                # hits / (hits + misses) of the reads this zone answered; None before any
                "hit_rate": counts.get("hits", 0) / answered if answered else None,
                **counts,
                "remote_hits": stats.remote_hits[z],
                "read_repairs": stats.read_repairs[z],
                "write_failures": stats.write_failures[z],
            }
        return {
            "name": self.name,
            "local_zone": self.config.local_zone,
            "read_order": list(self.config.zone_order),
            "write_policy": self.config.write_policy,
            "read_repair": self.config.read_repair,
            "timeout": self.config.timeout,
            "zones": zones,
            "dedup_hits": stats.dedup_hits,
            "singleflight_shares": stats.singleflight_shares,
        }

    def __repr__(self) -> str:
        zones, local = list(self._zones), self.config.local_zone
        return f"<{type(self).__name__} {self.name!r} zones={zones} local={local!r}>"

    # -- helpers shared by the drivers ----------------------------------------------------

    def _keys(
        self, keys: Iterable[str | bytes]
    ) -> tuple[list[bytes], dict[bytes, list[str | bytes]]]:
        """Encoded keys (deduplicated, in order) and the caller's keys each one stands for."""
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

    def _loader(self, pool: str, concurrency: int, timeout: float, fallback: Any) -> Guard:
        if not isinstance(pool, str) or not pool or "." in pool:
            from ..errors import ConfigError

            raise ConfigError("pool", f"must be a name without '.', got {pool!r}")
        dep = self._registry.dependency(
            f"cache.{self.name}.loader.{pool}",
            Policy(
                timeout=timeout,
                pool_size=concurrency,
                queue_size=concurrency,
                max_concurrent=concurrency,
            ),
        )
        if fallback is MISSING:
            return dep.guard()
        if callable(fallback):
            wrapped: Callable[..., Any] = _wrap_fallback(fallback)
            return dep.guard(fallback=wrapped)
        return dep.guard(fallback=FromFallback(fallback))


def _wrap_fallback(fallback: Callable[..., Any]) -> Callable[..., Any]:
    import inspect

    if inspect.iscoroutinefunction(fallback):

        async def afb(*args: Any, **kwargs: Any) -> FromFallback:
            return FromFallback(await fallback(*args, **kwargs))

        return afb

    def fb(*args: Any, **kwargs: Any) -> FromFallback:
        return FromFallback(fallback(*args, **kwargs))

    return fb


def _default_registry() -> Registry:
    return registry()
