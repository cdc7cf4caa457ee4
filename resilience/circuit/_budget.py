"""Retry budget (Finagle's): retries may add at most ``ratio`` of the calls, plus a reserve.

Config: ``RetryBudget(ratio=0.2, min_per_second=10, ttl=10.0)``, Finagle's ``RetryBudget()``
defaults. Every caller call deposits; every retry withdraws; ``1 / ratio`` calls earn one retry
(5 with the default). A reserve of ``min_per_second * ttl`` retries is always there, so a
dependency called rarely can still be retried. Deposits and withdrawals expire after ``ttl``
seconds, so the budget reflects the traffic of the last ``ttl`` seconds only.

Runtime: ``RetryAccount(config)``, one per dependency key (the pipeline keeps one per key and
budget config, and every call site of that key with that budget shares it):

- ``deposit(now)``: once per caller call (not per attempt); or, fed by a rolling window
  (``RetryAccount(config, open_calls=window.open_calls)`` with ``deposit_calls`` as the
  window's ``on_close``), every caller call of the dependency deposits as its time bucket
  closes, which costs a call nothing (the calls of the bucket still open count as deposited);
- ``try_withdraw(now) -> bool``: once per retry; ``False`` means the budget is spent (count
  ``budget_exhausted``) and the last error, or the fallback, is returned instead of retrying;
- ``balance(now) -> float``: retries the budget would allow right now.

So under a total outage, calls reaching the dependency per caller call tend to
``1 + ratio + min_per_second / calls_per_second`` instead of ``attempts``.

The window is ``Ledger``: integer units in ``SLICES`` time slices of ``ttl / SLICES`` seconds
(an entry expires between ``ttl - ttl/SLICES`` and ``ttl`` after it was made, as Finagle's
``WindowedAdder``); a running sum keeps every operation O(1). The hedge budget reuses it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from ._checks import number, seconds

__all__ = [
    "DEFAULT_MIN_PER_SECOND",
    "DEFAULT_RATIO",
    "DEFAULT_TTL",
    "SCALE",
    "SLICES",
    "Ledger",
    "RetryAccount",
    "RetryBudget",
]

DEFAULT_RATIO = 0.2
DEFAULT_MIN_PER_SECOND = 10.0
DEFAULT_TTL = 10.0
SCALE = 1000  # units per deposit: integers, so 5 deposits of 0.2 make exactly one retry
SLICES = 10
MAX_RATIO = 1000.0  # Finagle's bound: a budget may allow many retries per call
MAX_TTL = 3600.0


@attrs.frozen(kw_only=True)
class RetryBudget:
    """How many retries the callers of one dependency may make together.

    Args:
        ratio: retries allowed per caller call, on top of the reserve (0.2: one retry per five
            calls; 0: the reserve only). Up to 1000, as in Finagle.
        min_per_second: retries per second always allowed, whatever the traffic (the reserve
            holds ``min_per_second * ttl`` of them).
        ttl: seconds a deposit or withdrawal counts for.
    """

    ratio: float = attrs.field(default=DEFAULT_RATIO, validator=number(low=0.0, high=MAX_RATIO))
    min_per_second: float = attrs.field(default=DEFAULT_MIN_PER_SECOND, validator=number(low=0.0))
    ttl: float = attrs.field(
        default=DEFAULT_TTL, validator=[seconds(positive=True), number(low=0.0, high=MAX_TTL)]
    )


class Ledger:
    """Integer units put and taken over a sliding window of ``ttl`` seconds, plus a reserve.

    ``try_get`` succeeds while ``reserve + (units put - units taken in the window) >= units``.
    Thread-safe: a lock held for a few integer operations.
    """

    __slots__ = ("_epoch", "_lock", "_n", "_reserve", "_slices", "_sum", "_width")

    def __init__(self, ttl: float, reserve: int, slices: int = SLICES) -> None:
        self._n = slices
        self._width = ttl / slices
        self._reserve = reserve
        self._slices = [0] * slices
        self._sum = 0
        self._epoch: int | None = None
        self._lock = threading.Lock()

    def _slot(self, now: float) -> int:
        """Index of the slice for ``now``, expiring slices that fell out of the window."""
        epoch = int(now // self._width)
        last = self._epoch
        if last is None:
            self._epoch = epoch
        elif epoch > last:
            slices = self._slices
            n = self._n
            for e in range(last + 1, min(epoch, last + n) + 1):
                i = e % n
                self._sum -= slices[i]
                slices[i] = 0
            self._epoch = epoch
        else:
            # ``now`` read a little before another thread's: book it in the current slice.
            epoch = last
        return epoch % self._n

    def put(self, now: float, units: int) -> None:
        with self._lock:
            self._slices[self._slot(now)] += units
            self._sum += units

    def try_get(self, now: float, units: int, credit: int = 0) -> bool:
        """Take ``units`` if the balance (plus ``credit``: units due but not put yet) has them."""
        with self._lock:
            i = self._slot(now)
            if self._reserve + self._sum + credit < units:
                return False
            self._slices[i] -= units
            self._sum -= units
            return True

    def balance(self, now: float) -> int:
        with self._lock:
            self._slot(now)
            return self._reserve + self._sum


class RetryAccount:
    """The runtime of one ``RetryBudget``, shared by every caller of one dependency key."""

    __slots__ = ("_deposit", "_ledger", "_open_calls", "_withdrawal", "config")

    def __init__(
        self, config: RetryBudget, open_calls: Callable[[float], int] | None = None
    ) -> None:
        self.config = config
        self._open_calls = open_calls
        # In units of 1/SCALE call: a call deposits SCALE, a retry costs SCALE / ratio.
        # ratio 0: calls earn nothing and a retry costs SCALE of the reserve.
        self._deposit = SCALE if config.ratio > 0 else 0
        self._withdrawal = round(SCALE / config.ratio) if config.ratio > 0 else SCALE
        reserve = round(config.min_per_second * config.ttl * self._withdrawal)
        self._ledger = Ledger(config.ttl, reserve)

    def deposit(self, now: float) -> None:
        """One caller call (made once per call, not per attempt)."""
        if self._deposit:
            self._ledger.put(now, self._deposit)

    def deposit_calls(self, calls: int, now: float) -> None:
        """``calls`` caller calls made by ``now`` (a closed bucket of the dependency's window)."""
        if self._deposit:
            self._ledger.put(now, calls * self._deposit)

    def _credit(self, now: float) -> int:
        open_calls = self._open_calls
        return 0 if open_calls is None else open_calls(now) * self._deposit

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; ``False`` (nothing taken) when it is spent."""
        return self._ledger.try_get(now, self._withdrawal, self._credit(now))

    def balance(self, now: float) -> float:
        """Retries the budget allows at ``now``."""
        credit = self._credit(now)
        return max(0, self._ledger.balance(now) + credit) / self._withdrawal
