"""Catching a zone up: the keys it missed while failing, replayed as deletes when it is back.

Every zone write that fails (open circuit, error, timeout) leaves the zone possibly stale for
those keys: the write may not have happened, or may land late. So does a zone write that
finished only after its caller had the answer: the caller's next write of the key may have
reached that server first, on another connection. Their keys go into the zone's
bounded queue; reads skip the zone for a queued key (another zone answers), and once the zone
is healthy again (its circuit closed and a call succeeded) the keys are deleted there. A delete
is safe whatever other writers did meanwhile: the worst it does is cause a miss. A key is
replayed only once it has waited ``SETTLE`` seconds, so a write that was held up on its way
(a stalled server's socket buffer, a proxy) lands before the delete meant to undo it. Past
``limit`` keys the oldest are dropped and counted as ``overflow`` (shown in ``status()``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["REPLAY_BATCH", "SETTLE", "CatchUp"]

REPLAY_BATCH = 500  # keys per replayed delete_many
SETTLE = 1.0  # seconds a missed key waits before its delete is replayed


class CatchUp:
    """One zone's queue of missed keys (thread-safe)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._keys: dict[bytes, tuple[int, float]] = {}  # key -> (sequence, time) of last miss
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
        now = self._clock()
        with self._lock:
            queue = self._keys
            for key in keys:
                if key in queue:
                    del queue[key]  # to the back: its newest miss
                else:
                    self.queued += 1
                queue[key] = (next(self._seq), now)
            while len(queue) > self.limit:
                del queue[next(iter(queue))]
                self.overflow += 1

    def take(self, n: int = REPLAY_BATCH) -> list[tuple[bytes, int]]:
        """Up to ``n`` oldest settled keys to replay, or nothing (none, or a replay under way)."""
        settled = self._clock() - SETTLE
        with self._lock:
            if self.replaying or not self._keys:
                return []
            taken = []
            for key, (seq, at) in itertools.islice(self._keys.items(), n):
                if at > settled:
                    break
                taken.append((key, seq))
            self.replaying = bool(taken)
            return taken

    def done(self, taken: list[tuple[bytes, int]], ok: bool) -> None:
        """A replay ended; on success its keys leave the queue unless they were missed again."""
        with self._lock:
            self.replaying = False
            if ok:
                for key, seq in taken:
                    entry = self._keys.get(key)
                    if entry is not None and entry[0] == seq:
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
