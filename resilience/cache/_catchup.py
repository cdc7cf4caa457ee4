"""Catching a zone up: the keys it may hold stale, kept out of reads and deleted there later.

Every zone write that fails (open circuit, error, timeout) leaves the zone possibly stale for
those keys: the write may not have happened, or may land late. So does a zone write that
another write of the same key overtook (see ``_fence``): the two may land in either order.
Their keys go into the zone's bounded queue; reads skip the zone for a queued key (another zone
answers), and once the zone is healthy again (its circuit closed and a call succeeded) the keys
are deleted there. A delete is safe whatever other writers did meanwhile: the worst it does is
cause a miss. A key is replayed only once it has waited ``SETTLE`` seconds, so a write that was
held up on its way (a stalled server's socket buffer, a proxy) lands before the delete meant to
undo it. Past ``limit`` keys the oldest are dropped and counted as ``overflow`` (shown in
``status()``).

A zone write still in flight when its caller was answered is *held*: until it finishes, reads
skip the zone for its keys (its old value is no longer the key's last acknowledged one), then
the key is released, or queued if the write failed or was overtaken.
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
        self._held: dict[bytes, int] = {}  # key -> zone writes in flight after their caller left
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.replaying = False
        self.queued = 0
        self.replayed = 0
        self.overflow = 0

    def __contains__(self, key: bytes) -> bool:
        """Whether reads must skip the zone for ``key`` (queued or held)."""
        return key in self._keys or key in self._held

    def __len__(self) -> int:
        """Keys queued (waiting for their delete)."""
        return len(self._keys)

    @property
    def skips(self) -> bool:
        """Whether reads skip the zone for any key."""
        return bool(self._keys) or bool(self._held)

    def hold(self, keys: Iterable[bytes]) -> None:
        """A write of ``keys`` to the zone is still in flight although its caller has its answer."""
        with self._lock:
            held = self._held
            for key in keys:
                held[key] = held.get(key, 0) + 1

    def release(self, keys: Iterable[bytes]) -> None:
        """A held write finished (its keys were queued first if it left the zone stale)."""
        with self._lock:
            held = self._held
            for key in keys:
                n = held.get(key, 0) - 1
                if n > 0:
                    held[key] = n
                else:
                    held.pop(key, None)

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
            "held": len(self._held),
            "queued": self.queued,
            "replayed": self.replayed,
            "overflow": self.overflow,
            "limit": self.limit,
        }

    def after_fork(self) -> None:
        """In a forked child: held writes never finish here, so their keys are queued."""
        self._lock = threading.Lock()
        self.replaying = False
        held, self._held = self._held, {}
        self.add(held)
