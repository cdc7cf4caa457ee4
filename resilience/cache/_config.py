"""The cache's configuration: a frozen value, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from pymemcache.client.base import normalize_server_spec

from ..errors import ConfigError
from ._serde import JsonSerde, Serde
from ._writes import WRITE_POLICIES, WritePolicy

__all__ = ["CacheConfig", "WritePolicy"]

DEFAULT_TIMEOUT = 0.05
DEFAULT_TTL = 900
DEFAULT_MAX_VALUE_SIZE = 1_000_000  # memcached's default item size is 1 MiB, headers included
DEFAULT_MAX_CONCURRENT = 64
DEFAULT_MIN_CALLS = 5
DEFAULT_FAILURE_RATE = 0.5
DEFAULT_OPEN_DURATION = 3.0
DEFAULT_CONSECUTIVE_FAILURES = 3  # mcrouter marks a host down (TKO) after 3 failures in a row
DEFAULT_WRITE_WORKERS = 8
DEFAULT_WRITE_POLICY: WritePolicy = "all_minus_1"  # EVCache's default latch
DEFAULT_ACQUIRE_TIMEOUT = 1.0  # a burst queues for permits rather than reading as misses
DEFAULT_BATCH_WINDOW = 0.0  # async gets of one loop turn share a multi-get
DEFAULT_MAX_BATCH = 256  # keys per batched multi-get
DEFAULT_CATCH_UP_SIZE = 10_000  # missed keys remembered per zone


def _zones(value: Any) -> dict[str, tuple[tuple[str, int], ...]]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError("zones", f"must be a non-empty mapping of zone -> servers, got {value!r}")
    zones: dict[str, tuple[tuple[str, int], ...]] = {}
    for zone, servers in value.items():
        if not isinstance(zone, str) or not zone or "." in zone:
            raise ConfigError(
                "zones", f"zone names must be non-empty strings without '.': {zone!r}"
            )
        if isinstance(servers, (str, bytes)) or not servers:
            raise ConfigError("zones", f"zone {zone!r} needs a list of 'host:port' servers")
        parsed = []
        for server in servers:
            try:
                spec = normalize_server_spec(server)
            except Exception as exc:
                raise ConfigError("zones", f"zone {zone!r}: bad server {server!r}: {exc}") from exc
            if not isinstance(spec, tuple):
                raise ConfigError("zones", f"zone {zone!r}: unix sockets are not supported")
            parsed.append((str(spec[0]), int(spec[1])))
        zones[zone] = tuple(parsed)
    return zones


def _names(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError("read_order", f"must be a list of zone names, got {value!r}")
    return tuple(value)


def _positive(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(attribute.name, f"must be a finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(attribute.name, f"must be > 0, got {value!r}")


def _count(minimum: int, allow_none: bool = False) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(attribute.name, f"must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(attribute.name, f"must be >= {minimum}, got {value!r}")

    return check


def _write_policy(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in WRITE_POLICIES:
        raise ConfigError(attribute.name, f"must be one of {list(WRITE_POLICIES)}, got {value!r}")


def _window(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(attribute.name, f"must be seconds >= 0 or None, got {value!r}")
    if value < 0:
        raise ConfigError(attribute.name, f"must be >= 0 (or None: no batching), got {value!r}")


def _flag(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(attribute.name, f"must be True or False, got {value!r}")


def _serde(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Serde):
        raise ConfigError(attribute.name, f"must have dumps() and loads(), got {value!r}")


def _fraction(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(attribute.name, f"must be a fraction in 0..1, got {value!r}")


def _name(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or "." in value or value.strip() != value:
        raise ConfigError(
            attribute.name, f"must be a non-empty string without '.' or spaces, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class CacheConfig:
    """Everything a replicated cache is built from; see ``ReplicatedCache`` for each field."""

    zones: dict[str, tuple[tuple[str, int], ...]] = attrs.field(converter=_zones)
    local_zone: str = attrs.field(default="")
    read_order: tuple[str, ...] = attrs.field(default=(), converter=_names)
    name: str = attrs.field(validator=_name)
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=_positive)
    default_ttl: int = attrs.field(default=DEFAULT_TTL, validator=_count(0))
    write_policy: WritePolicy = attrs.field(default=DEFAULT_WRITE_POLICY, validator=_write_policy)
    read_repair: bool = attrs.field(default=True, validator=_flag)
    repair_ttl: int | None = attrs.field(default=None, validator=_count(0, allow_none=True))
    serde: Serde = attrs.field(factory=JsonSerde, validator=_serde)
    hash_long_keys: bool = attrs.field(default=False, validator=_flag)
    max_value_size: int = attrs.field(default=DEFAULT_MAX_VALUE_SIZE, validator=_count(1))
    max_concurrent: int = attrs.field(default=DEFAULT_MAX_CONCURRENT, validator=_count(1))
    min_calls: int = attrs.field(default=DEFAULT_MIN_CALLS, validator=_count(1))
    failure_rate: float = attrs.field(default=DEFAULT_FAILURE_RATE, validator=_fraction)
    open_duration: float = attrs.field(default=DEFAULT_OPEN_DURATION, validator=_positive)
    consecutive_failures: int | None = attrs.field(
        default=DEFAULT_CONSECUTIVE_FAILURES, validator=_count(1, allow_none=True)
    )
    write_workers: int = attrs.field(default=DEFAULT_WRITE_WORKERS, validator=_count(1))
    acquire_timeout: float = attrs.field(default=DEFAULT_ACQUIRE_TIMEOUT, validator=_positive)
    batch_window: float | None = attrs.field(default=DEFAULT_BATCH_WINDOW, validator=_window)
    max_batch: int = attrs.field(default=DEFAULT_MAX_BATCH, validator=_count(1))
    catch_up_size: int = attrs.field(default=DEFAULT_CATCH_UP_SIZE, validator=_count(0))

    def __attrs_post_init__(self) -> None:
        names = list(self.zones)
        local = self.local_zone or names[0]
        if local not in self.zones:
            raise ConfigError("local_zone", f"{local!r} is not one of the zones {names}")
        others = self.read_order or tuple(z for z in names if z != local)
        for zone in others:
            if zone not in self.zones or zone == local:
                raise ConfigError("read_order", f"{zone!r} is not a remote zone of {names}")
        if len(set(others)) != len(others):
            raise ConfigError("read_order", f"names a zone twice: {list(others)}")
        object.__setattr__(self, "local_zone", local)
        object.__setattr__(self, "read_order", tuple(others))

    @property
    def zone_order(self) -> tuple[str, ...]:
        """Zones in the order reads try them: local first."""
        return (self.local_zone, *self.read_order)

    @property
    def effective_repair_ttl(self) -> int:
        return self.default_ttl if self.repair_ttl is None else self.repair_ttl
