"""Which writes of a key are in flight in this process, so that no read trusts a zone they race.

Every write numbers itself when it starts (``start``) and says when every zone has answered
(``finish``); caches of one name (sync and async twins) share one fence. It answers two
questions, without any IO:

- ``overtaken(key, n, value)``: a write of ``key`` that leaves another value (a set of other
  bytes, a delete, an operation whose result is not known in advance) started after write
  ``n`` while ``n`` was still in flight. Zone writes of the two travel on different connections
  and may land in either order, so a zone that ``n`` reached is caught up for that key (see
  ``_writes``). Writers racing to store the same bytes (a stampede filling a key) leave every
  zone with those bytes whatever the order, so they catch nothing up.
- ``mark(key)`` / ``unchanged(key, mark)``: whether any write of ``key`` started since a read
  repair looked at the key (and none was in flight then). A repair copies a value read from
  another zone with ``add``; a write racing it (a delete, a set the local zone missed) could
  land before the copy and be undone by it, so such a repair is not made, or caught up.

Numbers of settled writes are kept per stripe of keys, not per key (the memory stays fixed):
two keys of one stripe only make a repair more cautious, never less.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["STRIPES", "Fence"]

STRIPES = 4096  # a power of two


class Fence:
    """Writes of one cache name in flight, per key (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        # key -> [writes of it in flight, number of the newest, the value the newest leaves]
        self._active: dict[bytes, list[Any]] = {}
        self._newest = [0] * STRIPES  # number of the newest write started, per stripe

    def start(self, keys: Iterable[bytes], values: Sequence[Any]) -> int:
        """A write of ``keys`` begins, leaving ``values`` (in order; compared with ``==``, so
        a fresh ``object()`` stands for a result not known in advance); its number."""
        with self._lock:
            self._count += 1
            n = self._count
            active, newest = self._active, self._newest
            for key, value in zip(keys, values, strict=True):
                entry = active.get(key)
                if entry is None:
                    active[key] = [1, n, value]
                else:
                    entry[0] += 1
                    entry[1] = n
                    entry[2] = value
                newest[hash(key) & (STRIPES - 1)] = n
            return n

    def finish(self, keys: Iterable[bytes]) -> None:
        """Every zone has answered the write of ``keys`` (started by ``start``)."""
        with self._lock:
            active = self._active
            for key in keys:
                entry = active.get(key)
                if entry is not None:
                    entry[0] -= 1
                    if entry[0] <= 0:
                        del active[key]

    def overtaken(self, key: bytes, n: int, value: Any) -> bool:
        """Whether a write of ``key`` leaving another value than ``value`` started after write
        ``n`` (which is still in flight)."""
        entry = self._active.get(key)
        return entry is not None and entry[1] != n and entry[2] != value

    def mark(self, key: bytes) -> int | None:
        """A mark to compare with later, or None while a write of ``key`` is in flight."""
        # newest first: a write starting in between is then seen in flight (start() records
        # it in flight before it renumbers the stripe)
        newest = self._newest[hash(key) & (STRIPES - 1)]
        return None if key in self._active else newest

    def unchanged(self, key: bytes, mark: int) -> bool:
        """No write of ``key`` started since ``mark`` was taken."""
        return key not in self._active and self._newest[hash(key) & (STRIPES - 1)] == mark

    def after_fork(self) -> None:
        """In a forked child: the parent's writes in flight never finish here."""
        self._lock = threading.Lock()
        self._active = {}
