"""Catching a zone up: the keys it missed while failing, replayed as deletes when it is back.

Every zone write that fails (open circuit, error, timeout) leaves the zone possibly stale for
those keys: the write may not have happened, or may land late. So does a zone write that
finished only after its caller had the answer: the caller's next write of the key may have
reached that server first, on another connection. Their keys go into the zone's
bounded queue; reads skip the zone for a queued key (another zone answers), and once the zone
is healthy again (its circuit closed and a call succeeded) the keys are deleted there. A delete
is safe whatever other writers did meanwhile: the worst it does is cause a miss. Past
``limit`` keys the oldest are dropped and counted as ``overflow`` (shown in ``status()``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

__all__ = ["REPLAY_BATCH", "CatchUp"]

REPLAY_BATCH = 500  # keys per replayed delete_many


class CatchUp:
    """One zone's queue of missed keys (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: dict[bytes, int] = {}  # key -> sequence number of its latest miss
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.replaying = False
        self.queued = 0
        self.replayed = 0
        self.overflow = 0

    def __contains__(self, key: bytes) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[bytes]) -> None:
        with self._lock:
            queue = self._keys
            for key in keys:
                if key in queue:
                    del queue[key]  # to the back: its newest miss
                else:
                    self.queued += 1
                queue[key] = next(self._seq)
            while len(queue) > self.limit:
                del queue[next(iter(queue))]
                self.overflow += 1

    def take(self, n: int = REPLAY_BATCH) -> list[tuple[bytes, int]]:
        """Up to ``n`` oldest keys to replay, or nothing if a replay is under way."""
        with self._lock:
            if self.replaying or not self._keys:
                return []
            self.replaying = True
            return list(itertools.islice(self._keys.items(), n))

    def done(self, taken: list[tuple[bytes, int]], ok: bool) -> None:
        """A replay ended; on success its keys leave the queue unless they were missed again."""
        with self._lock:
            self.replaying = False
            if ok:
                for key, seq in taken:
                    if self._keys.get(key) == seq:
                        del self._keys[key]
                        self.replayed += 1

    def clear(self) -> None:
        """The zone was flushed: nothing in it can be stale."""
        with self._lock:
            self._keys.clear()

    def status(self) -> dict[str, int]:
        return {
            "pending": len(self._keys),
            "queued": self.queued,
            "replayed": self.replayed,
            "overflow": self.overflow,
            "limit": self.limit,
        }

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self.replaying = False
