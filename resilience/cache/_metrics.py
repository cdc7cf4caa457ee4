"""Cache metrics for Prometheus, built at scrape time from each cache's own counters.

One source per resilience registry serves every live cache of that registry, so each metric
family appears once however many caches exist.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from ..circuit import Registry, State
from ..metrics import (
    CACHE_ACQUIRE_TIMEOUTS,
    CACHE_BATCHED_GETS,
    CACHE_CATCH_UP_KEYS,
    CACHE_CATCH_UP_PENDING,
    CACHE_DEDUP_HITS,
    CACHE_DEGRADED_WRITES,
    CACHE_READ_REPAIRS,
    CACHE_REMOTE_HITS,
    CACHE_REQUESTS,
    CACHE_SINGLEFLIGHT_SHARES,
    CACHE_WRITE_FAILURES,
    CACHE_ZONE_UP,
    counter,
    gauge,
)
from ._stats import CacheStats

__all__ = ["CacheMetrics", "metrics_for", "zone_is_up"]

_UP = frozenset((State.CLOSED, State.HALF_OPEN, State.FORCED_CLOSED))


def zone_is_up(state: State) -> bool:
    return state in _UP


class _Cache(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> CacheStats: ...

    def zone_states(self) -> dict[str, State]: ...

    def catch_up_status(self) -> dict[str, dict[str, int]]: ...


class CacheMetrics:
    """The metrics source of one registry's caches."""

    def __init__(self) -> None:
        self._caches: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, cache: _Cache) -> None:
        self._caches.add(cache)

    def discard(self, cache: _Cache) -> None:
        self._caches.discard(cache)

    def collect_metrics(self) -> Iterator[Any]:
        requests = counter(
            CACHE_REQUESTS,
            "Cache requests by zone, operation and result.",
            ["cache", "zone", "op", "result"],
        )
        per_zone = [(counter(m, text, ["cache", "zone"]), attr) for m, text, attr in _PER_ZONE]
        per_cache = [(counter(m, text, ["cache"]), attr) for m, text, attr in _PER_CACHE]
        up = gauge(
            CACHE_ZONE_UP, "1 when the zone's breaker lets calls through.", ["cache", "zone"]
        )
        catch_up = counter(
            CACHE_CATCH_UP_KEYS,
            "Keys a zone missed writes of: queued, replayed as deletes, or dropped (overflow).",
            ["cache", "zone", "event"],
        )
        pending = gauge(
            CACHE_CATCH_UP_PENDING, "Missed keys not yet deleted in the zone.", ["cache", "zone"]
        )
        for cache in list(self._caches):
            name, stats = cache.name, cache.stats
            for (zone, op, result), n in sorted(stats.requests.items()):
                requests.add_metric([name, zone, op, result], n)
            for family, attr in per_zone:
                for zone, n in getattr(stats, attr).items():
                    family.add_metric([name, zone], n)
            for family, attr in per_cache:
                family.add_metric([name], getattr(stats, attr))
            for zone, state in cache.zone_states().items():
                up.add_metric([name, zone], 1.0 if zone_is_up(state) else 0.0)
            for zone, st in cache.catch_up_status().items():
                for event in ("queued", "replayed", "overflow"):
                    catch_up.add_metric([name, zone, event], st[event])
                pending.add_metric([name, zone], st["pending"])
        yield requests
        yield from (family for family, _ in per_zone)
        yield from (family for family, _ in per_cache)
        yield from (up, catch_up, pending)


# counters kept per zone and per cache by CacheStats: (metric, help, CacheStats attribute)
_PER_ZONE = (
    (CACHE_REMOTE_HITS, "Hits served by a zone other than the local one.", "remote_hits"),
    (
        CACHE_READ_REPAIRS,
        "Values copied into the local zone after a remote hit.",
        "read_repairs",
    ),
    (CACHE_WRITE_FAILURES, "Zone writes that failed.", "write_failures"),
    (
        CACHE_ACQUIRE_TIMEOUTS,
        "Zone calls skipped after waiting acquire_timeout for a permit or connection.",
        "acquire_timeouts",
    ),
)
_PER_CACHE = (
    (CACHE_DEDUP_HITS, "Reads answered from the request's memo.", "dedup_hits"),
    (
        CACHE_SINGLEFLIGHT_SHARES,
        "Reads that waited for a concurrent fetch of the same key.",
        "singleflight_shares",
    ),
    (
        CACHE_DEGRADED_WRITES,
        "Writes that met their write policy although a zone failed them.",
        "degraded_writes",
    ),
    (CACHE_BATCHED_GETS, "Async gets that shared a multi-get with others.", "batched_gets"),
)


_sources: weakref.WeakKeyDictionary[Registry, CacheMetrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def metrics_for(registry: Registry) -> CacheMetrics:
    """The registry's cache metrics source, registered on first use."""
    with _lock:
        source = _sources.get(registry)
        if source is None:
            source = _sources[registry] = CacheMetrics()
            registry.add_metrics_source(source)
        return source
