"""Policy and Retry: frozen, validated configuration values.

Defaults follow Hystrix (see DESIGN.md). Every invalid value raises ``ConfigError`` naming the
field at construction, so a bad policy never reaches a running service.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

import attrs

from ..errors import ConfigError
from ._adaptive import AdaptiveLimit
from ._ratelimit import RateLimit

__all__ = ["DEFAULT_POLICY", "Isolation", "Policy", "count_validator"]

Isolation = Literal["thread", "semaphore"]

DEFAULT_TIMEOUT = 1.0
DEFAULT_WINDOW = 10.0
DEFAULT_BUCKETS = 10
DEFAULT_MIN_CALLS = 20
DEFAULT_FAILURE_RATE = 0.5
DEFAULT_OPEN_DURATION = 5.0
DEFAULT_HALF_OPEN_CALLS = 1
DEFAULT_POOL_SIZE = 10
DEFAULT_QUEUE_SIZE = 5
DEFAULT_MAX_CONCURRENT = 10


def _number(*, positive: bool, allow_none: bool = False) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(attribute.name, f"must be a number of seconds, got {value!r}")
        if math.isnan(value) or math.isinf(value):
            raise ConfigError(attribute.name, f"must be finite, got {value!r}")
        if positive and value <= 0:
            raise ConfigError(attribute.name, f"must be > 0, got {value!r}")
        if value < 0:
            raise ConfigError(attribute.name, f"must be >= 0, got {value!r}")

    return check


def count_validator(*, minimum: int) -> Any:
    """An attrs validator: an int (not a bool) >= ``minimum``, else ``ConfigError``."""
    return _count(minimum=minimum)


def _count(*, minimum: int) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(attribute.name, f"must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(attribute.name, f"must be >= {minimum}, got {value!r}")

    return check


def _count_or_none(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _count(minimum=1)(inst, attribute, value)


def _rate(*, allow_none: bool = False) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(attribute.name, f"must be a fraction in 0..1, got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(attribute.name, f"must be in 0..1, got {value!r}")

    return check


def _instance(kind: type, public: str) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise ConfigError(attribute.name, f"must be a {public} or None, got {value!r}")

    return check


def _isolation(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("thread", "semaphore"):
        raise ConfigError(attribute.name, f"must be 'thread' or 'semaphore', got {value!r}")


@attrs.frozen(kw_only=True)
class Policy:
    """What every call to one dependency shares.

    Args:
        timeout: seconds each attempt may take (thread-pool calls are abandoned and coroutines
            cancelled at it; a sync call under semaphore isolation cannot be preempted and is
            recorded as a timeout when it returns late, see ``Dependency.call``). A retried
            call may take several; ``protect(..., deadline=...)`` bounds the whole call.
        isolation: for sync functions, ``"thread"`` runs them in the dependency's own bounded
            pool; ``"semaphore"`` runs them on the caller's thread under ``max_concurrent``.
        pool_size / queue_size: workers of the thread pool and calls allowed to wait for one.
        max_concurrent: concurrent calls under semaphore isolation and for coroutines.
        window / buckets: the rolling statistics window in seconds and its number of buckets.
        min_calls: calls that must fall in the window before the failure rate can open it.
        failure_rate: fraction of failures (failures + timeouts) that opens the circuit.
        slow_call_duration / slow_call_rate: optional second trigger; both set or both None.
        open_duration: seconds the circuit stays open before letting trial calls through.
        half_open_calls: trial calls admitted at once in half-open; all must succeed to close.
        consecutive_failures: optional third trigger (mcrouter's TKO): open after this many
            failures in a row, whatever the window holds. A stalled node behind heavy healthy
            traffic then opens in N timeouts instead of after the window's rate catches up.
        limit: an ``AdaptiveLimit``: the calls admitted at once follow measured latency instead
            of ``max_concurrent`` / ``pool_size`` (the pool then runs one worker per admitted
            call and ``queue_size`` is not used: ``AdaptiveLimit(wait=...)`` lets calls wait).
        rate_limit: a ``RateLimit``: a token bucket every call takes from before it is run.
    """

    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=_number(positive=True))
    isolation: Isolation = attrs.field(default="thread", validator=_isolation)
    pool_size: int = attrs.field(default=DEFAULT_POOL_SIZE, validator=_count(minimum=1))
    queue_size: int = attrs.field(default=DEFAULT_QUEUE_SIZE, validator=_count(minimum=0))
    max_concurrent: int = attrs.field(default=DEFAULT_MAX_CONCURRENT, validator=_count(minimum=1))
    window: float = attrs.field(default=DEFAULT_WINDOW, validator=_number(positive=True))
    buckets: int = attrs.field(default=DEFAULT_BUCKETS, validator=_count(minimum=1))
    min_calls: int = attrs.field(default=DEFAULT_MIN_CALLS, validator=_count(minimum=1))
    failure_rate: float = attrs.field(default=DEFAULT_FAILURE_RATE, validator=_rate())
    slow_call_duration: float | None = attrs.field(
        default=None, validator=_number(positive=True, allow_none=True)
    )
    slow_call_rate: float | None = attrs.field(default=None, validator=_rate(allow_none=True))
    open_duration: float = attrs.field(
        default=DEFAULT_OPEN_DURATION, validator=_number(positive=False)
    )
    half_open_calls: int = attrs.field(default=DEFAULT_HALF_OPEN_CALLS, validator=_count(minimum=1))
    consecutive_failures: int | None = attrs.field(default=None, validator=_count_or_none)
    limit: AdaptiveLimit | None = attrs.field(
        default=None, validator=_instance(AdaptiveLimit, "resilience.AdaptiveLimit")
    )
    rate_limit: RateLimit | None = attrs.field(
        default=None, validator=_instance(RateLimit, "resilience.RateLimit")
    )

    def __attrs_post_init__(self) -> None:
        if (self.slow_call_duration is None) != (self.slow_call_rate is None):
            field = "slow_call_rate" if self.slow_call_rate is None else "slow_call_duration"
            raise ConfigError(field, "slow_call_duration and slow_call_rate go together")

    @property
    def bucket_width(self) -> float:
        return self.window / self.buckets

    def differences(self, other: Policy) -> list[str]:
        """Names of the fields whose values differ between two policies."""
        return [
            a.name for a in attrs.fields(Policy) if getattr(self, a.name) != getattr(other, a.name)
        ]

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(a.name for a in attrs.fields(cls))

    @classmethod
    def build(cls, base: Policy | None = None, **changes: Any) -> Policy:
        """A policy from keyword options; an unknown keyword is a ``ConfigError``."""
        unknown = sorted(set(changes) - cls.field_names())
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(cls.field_names()), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(unknown[0], f"is not a Policy field{hint}")
        try:
            return attrs.evolve(base, **changes) if base is not None else cls(**changes)
        except TypeError as exc:  # wrong argument shapes never escape as bare TypeError
            raise ConfigError("policy", str(exc)) from exc


DEFAULT_POLICY = Policy()
