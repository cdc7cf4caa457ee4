"""Rate limit: a token bucket per dependency.

Config: ``RateLimit(rate, per=1.0, burst=None, wait=0.0)`` allows ``rate`` calls every ``per``
seconds, with bursts of up to ``burst`` calls (default: one period's worth, ``rate``, and at least
one token). A call with no token waits at most ``wait`` seconds for one, then is refused
(``RateLimitedError``, or the fallback).

Runtime: ``TokenBucket(config, clock=time.monotonic)``. The decisions take the time as an
argument and never block:

- ``try_take(now) -> float``: ``0.0`` when a token was taken; otherwise the seconds until one
  will be available, and nothing is taken.
- ``until(now) -> float``: seconds until a token is due (0.0: one is there); takes nothing.
- ``available(now) -> float``: tokens in the bucket (the gauge
  ``resilience_rate_limit_available_tokens``; 0 while waiters hold reservations).
- ``reserve(now, max_wait) -> float | None``: take a token now or book the next one if it is
  due within ``max_wait``; returns the seconds to wait (0.0: now), or ``None`` (nothing booked).
  Booked tokens are handed out in booking order, so waiting callers are served FIFO.
- ``refund(now)``: give back a booked token whose caller stopped waiting (cancelled).

The waiting drivers ``take_sync(wait=None)`` and ``await take_async(wait=None)`` share that core
and differ only in how they sleep; both return 0.0 once a token is held, or the seconds until
one would be available when the wait allowed is shorter. A caller cancelled while it waits
gives its booked token back.

The bucket starts full: the first ``burst`` calls pass at once, then ``rate`` per ``per``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..errors import ConfigError
from ._checks import check_number, seconds

__all__ = ["DEFAULT_PER", "DEFAULT_WAIT", "RateLimit", "TokenBucket"]

DEFAULT_PER = 1.0
DEFAULT_WAIT = 0.0
# A token counts as whole within float rounding of the clock: 100.0 + 0.05 + 0.05 != 100.1.
_WHOLE = 1.0 - 1e-9


def _rate(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_number(attribute.name, value, low=0.0)
    if value <= 0:
        raise ConfigError(attribute.name, f"must be > 0, got {value!r}")


def _burst(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        check_number(attribute.name, value, low=1.0)


@attrs.frozen(kw_only=False)
class RateLimit:
    """A token bucket: ``rate`` calls per ``per`` seconds, bursts of ``burst``.

    Args:
        rate: calls allowed per period (> 0; may be fractional: ``RateLimit(1, per=60)`` is
            one a minute, ``RateLimit(0.5)`` one every two seconds).
        per: the period in seconds (default 1.0).
        burst: tokens the bucket holds, so calls that may pass at once after a quiet spell.
            Default ``None``: one period's worth (``rate``), and never fewer than 1.
        wait: seconds a call may wait for a token before it is refused (default 0: refused
            at once).
    """

    rate: float = attrs.field(validator=_rate)
    per: float = attrs.field(default=DEFAULT_PER, validator=seconds(positive=True))
    burst: float | None = attrs.field(default=None, validator=_burst, kw_only=True)
    wait: float = attrs.field(default=DEFAULT_WAIT, validator=seconds(positive=False), kw_only=True)

    @property
    def per_second(self) -> float:
        """Tokens added per second."""
        return self.rate / self.per

    @property
    def capacity(self) -> float:
        """The burst in force: ``burst``, or one period's worth (at least one token)."""
        return self.burst if self.burst is not None else max(1.0, float(self.rate))


class TokenBucket:
    """The runtime of one ``RateLimit``: thread-safe; the lock is held for a few float ops."""

    __slots__ = ("_capacity", "_lock", "_per_second", "_stamp", "_tokens", "clock", "config")

    def __init__(self, config: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(config, RateLimit):
            raise ConfigError("rate_limit", f"must be a resilience.RateLimit, got {config!r}")
        self.config = config
        self.clock = clock
        self._per_second = config.per_second
        self._capacity = config.capacity
        self._tokens = self._capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    @property
    def wait(self) -> float:
        """Seconds a call may wait for a token (the config's ``wait``)."""
        return self.config.wait

    def _refill(self, now: float) -> float:
        # Callers on other threads may pass a ``now`` read just before ours: time never goes back.
        elapsed = now - self._stamp
        if elapsed > 0:
            self._stamp = now
            tokens = self._tokens + elapsed * self._per_second
            self._tokens = tokens if tokens < self._capacity else self._capacity
        return self._tokens

    def try_take(self, now: float) -> float:
        """Take a token: 0.0 if taken, else the seconds until one is due (nothing taken)."""
        with self._lock:
            tokens = self._refill(now)
            if tokens >= _WHOLE:
                self._tokens = tokens - 1.0
                return 0.0
        return (1.0 - tokens) / self._per_second

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Take a token now, or book the next one due within ``max_wait`` seconds.

        Returns the seconds the caller must wait before its call (0.0: none), or ``None`` when
        no token is due in time; then nothing is booked.
        """
        with self._lock:
            tokens = self._refill(now)
            if tokens >= _WHOLE:
                self._tokens = tokens - 1.0
                return 0.0
            delay = (1.0 - tokens) / self._per_second
            if delay > max_wait:
                return None
            self._tokens = tokens - 1.0  # negative: later bookings queue behind this one
            return delay

    def refund(self, now: float) -> None:
        """Give back one booked token whose caller gave up waiting."""
        with self._lock:
            tokens = self._refill(now) + 1.0
            self._tokens = tokens if tokens < self._capacity else self._capacity

    def until(self, now: float) -> float:
        """Seconds until a token is due at ``now`` (0.0: one is there); takes nothing."""
        with self._lock:
            tokens = self._refill(now)
        return 0.0 if tokens >= _WHOLE else (1.0 - tokens) / self._per_second

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (never negative)."""
        with self._lock:
            tokens = self._refill(now)
        return tokens if tokens > 0.0 else 0.0

    # -- waiting drivers ------------------------------------------------------------------

    def take_sync(
        self, wait: float | None = None, sleep: Callable[[float], Any] = time.sleep
    ) -> float:
        """Take a token, sleeping at most ``wait`` seconds (default: the config's) for it.

        Returns 0.0 once a token is held, else the seconds until one would be due.
        """
        wait = self.config.wait if wait is None else wait
        now = self.clock()
        if wait <= 0:
            return self.try_take(now)
        delay = self.reserve(now, wait)
        if delay is None:
            return self.try_take(now)
        if delay > 0:
            done = False
            try:
                sleep(delay)
                done = True
            finally:
                if not done:
                    self.refund(self.clock())
        return 0.0

    async def take_async(
        self,
        wait: float | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> float:
        """The coroutine counterpart of ``take_sync`` (sleeps with ``asyncio.sleep``)."""
        wait = self.config.wait if wait is None else wait
        now = self.clock()
        if wait <= 0:
            return self.try_take(now)
        delay = self.reserve(now, wait)
        if delay is None:
            return self.try_take(now)
        if delay > 0:
            done = False
            try:
                await sleep(delay)
                done = True
            finally:
                if not done:
                    self.refund(self.clock())
        return 0.0
