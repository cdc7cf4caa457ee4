"""A call site of a dependency: its fallback, ignored errors, retry and deadline.

What a ``Guard`` holds belongs to one decorated function (or one ``Dependency.guard()``); what
every caller of the key shares (breaker, limits, window) is the ``Dependency``. The guard's
``call`` / ``acall`` are the sync and async drivers (``_sync``, ``_async``); ``fast_sync`` /
``fast_async`` build the decorator's closures (``_fast``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import _async, _fast, _sync
from ._fallback import MISSING
from ._hedge import Hedge, HedgeThrottle
from ._retry import Retrier, Retry

if TYPE_CHECKING:
    from ._dependency import Dependency

__all__ = ["Guard", "exception_types"]


def exception_types(field: str, value: Any) -> tuple[type[BaseException], ...]:
    """``value`` as a tuple of exception types, or ``ConfigError`` naming ``field``."""
    if isinstance(value, str):
        raise ConfigError(
            field,
            f"wants exception types, e.g. {field}={value} or {field}=({value}, KeyError), "
            f"not the string {value!r}",
        )
    if isinstance(value, type):
        value = (value,)
    try:
        types = tuple(value)
    except TypeError:
        raise ConfigError(field, f"wants exception types, got {value!r}") from None
    bad = [t for t in types if not (isinstance(t, type) and issubclass(t, BaseException))]
    if bad:
        raise ConfigError(field, f"wants exception types, got {bad[0]!r} in {value!r}")
    return types


def _deadline(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("deadline", f"must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise ConfigError("deadline", f"must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class Guard:
    """One call site of a dependency: the dependency plus fallback, ignore, retry and deadline.

    Args:
        fallback: a static value or a callable taking the call's arguments (``MISSING``: none).
        ignore: exception types raised to the caller uncounted, without fallback or retry.
        retry: a ``Retry``; nothing retries without one.
        deadline: seconds bounding the whole call, every attempt, token wait and back-off
            included (``Policy.timeout`` bounds each attempt). None: no bound beyond those.
        hedge: a ``Hedge``: slow (or failed) attempts are raced by another one; for coroutine
            functions and for sync functions under thread isolation (``_hedging``).
    """

    __slots__ = (
        "_budget",
        "deadline",
        "dependency",
        "fallback",
        "fast_ok",
        "hedge",
        "ignore",
        "on_result",
        "plain",
        "retry",
        "throttle",
    )

    call = _sync.call
    acall = _async.call

    def __init__(
        self,
        dependency: Dependency,
        *,
        fallback: Any = MISSING,
        ignore: Any = (),
        retry: Any = None,
        deadline: Any = None,
        hedge: Any = None,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigError("retry", f"must be a resilience.Retry, got {retry!r}")
        if hedge is not None and not isinstance(hedge, Hedge):
            raise ConfigError("hedge", f"must be a resilience.Hedge, got {hedge!r}")
        self.dependency = dependency
        self.fallback = fallback
        self.ignore = exception_types("ignore", ignore)
        self.retry = retry if retry is not None and retry.attempts > 1 else None
        self.deadline = _deadline(deadline)
        self._budget = None if self.retry is None else dependency.retry_budget(self.retry)
        self.hedge: Hedge | None = hedge
        self.throttle: HedgeThrottle | None = (
            None if hedge is None else dependency.hedge_throttle(hedge)
        )
        # ``plain``: nothing to do when a call starts (no deadline, no hedge budget to pay
        # into; the retry budget counts calls from the window). ``fast_ok``: nor after a
        # success (no result to inspect); the decorator's closed-circuit fast path serves such
        # guards.
        self.plain = self.deadline is None and hedge is None
        # ``on_result``: the retry's predicate on successful results (None: a success ends
        # the call, whatever the result).
        self.on_result = None if self.retry is None else self.retry.on_result
        self.fast_ok = self.plain and self.on_result is None

    def start(self) -> float | None:
        """A caller call begins: pay into the hedge budget; its deadline (clock time) or None.
        (The retry budget counts the dependency's calls from its window.)"""
        if self.plain:
            return None
        now = self.dependency._clock()
        if self.throttle is not None:
            self.throttle.on_call(now)
        return None if self.deadline is None else now + self.deadline

    def retrier(self) -> Retrier | None:
        """Retry decisions for one caller call (None without a Retry)."""
        retry = self.retry
        return None if retry is None else Retrier(retry, self._budget, self.ignore)

    async def acall_sync(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Await the sync ``fn`` run in the dependency's thread pool, within its timeout."""
        return await _async.call_in_pool(self, fn, args, kwargs)

    def fast_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return _fast.fast_sync(self, fn)

    def fast_async(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        return _fast.fast_async(self, fn)
