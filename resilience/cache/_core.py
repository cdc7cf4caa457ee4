"""The decision core shared by the sync and async caches: no IO, no waiting.

Reads are generators (*flows*) that yield the zone calls they want and are sent each call's
outcome ``(ok, reply_or_error)``; they decide the zone order, what to re-ask and what to
repair. Writes are a :class:`Tally` that the drivers feed with each zone's outcome as it
arrives; the tally says when the write policy is satisfied and what the caller is told.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping
from typing import Any

import attrs

from ..context import current_scope
from ..errors import CacheWriteError, ConfigError, ValueTooLargeError
from ._config import CacheConfig
from ._flight import RETRY, finish, join, remember
from ._keys import key_encoder
from ._protocol import Item

__all__ = ["CALL", "MISS", "WAIT", "CacheCore", "CacheStats", "Flow", "Tally", "WriteResult"]

CALL = 0  # step: (CALL, zone, op, args) -> the driver sends back (ok, reply or error)
WAIT = 1  # step: (WAIT, flight, lock) -> the driver waits for the flight and sends its value


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()

Step = tuple[Any, ...]
Flow = Generator[Step, Any, Any]


class CacheStats:
    """Counters of one cache, read at scrape time and by ``status()``."""

    def __init__(self, zones: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        # (zone, op, result) -> count; result is hit, miss, error (reads) or ok, error (writes)
        self.requests: dict[tuple[str, str, str], int] = {}
        self.remote_hits = dict.fromkeys(zones, 0)
        self.read_repairs = dict.fromkeys(zones, 0)
        self.write_failures = dict.fromkeys(zones, 0)
        self.dedup_hits = 0
        self.singleflight_shares = 0

    def count(self, zone: str, op: str, result: str, n: int = 1) -> None:
        key = (zone, op, result)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + n

    def remote_hit(self, zone: str, n: int = 1) -> None:
        with self._lock:
            self.remote_hits[zone] += n

    def repaired(self, zone: str, n: int = 1) -> None:
        with self._lock:
            self.read_repairs[zone] += n

    def write_failed(self, zone: str) -> None:
        with self._lock:
            self.write_failures[zone] += 1

    def dedup(self, shared: bool, n: int = 1) -> None:
        with self._lock:
            if shared:
                self.singleflight_shares += n
            else:
                self.dedup_hits += n

    def zone_counts(self, zone: str) -> dict[str, int]:
        """hits, misses and errors of reads, ok and failed writes, for ``status()``."""
        out = {"hits": 0, "misses": 0, "read_errors": 0, "writes": 0, "write_errors": 0}
        names = {"hit": "hits", "miss": "misses"}
        with self._lock:
            items = list(self.requests.items())
        for (z, op, result), n in items:
            if z != zone:
                continue
            if op.startswith("get"):
                out[names.get(result, "read_errors")] += n
            elif op not in ("repair",):
                out["writes" if result == "ok" else "write_errors"] += n
        return out


@attrs.frozen(kw_only=True)
class WriteResult:
    """What a write did in each zone, as known when the call returned.

    ``ok`` says whether the write policy was met. ``acknowledged`` zones answered (their reply in
    ``replies``: True/False for stored/deleted/touched, the new value for incr/decr);
    ``failed`` maps zones to the error they gave; ``pending`` zones had not answered yet (a
    quorum or local write returns early; their outcome is still counted when it arrives).
    """

    op: str
    policy: str
    ok: bool
    acknowledged: tuple[str, ...]
    failed: Mapping[str, str]
    pending: tuple[str, ...]
    replies: Mapping[str, Any]

    def __bool__(self) -> bool:
        return self.ok


def _is_ack(op: str, reply: Any) -> str | None:
    """Why a zone's reply is a failure for ``op``, or None when it acknowledges the write."""
    if op == "set" and reply is not True:
        return "not stored"
    if op == "set_many" and reply:
        return f"not stored: {len(reply)} keys"
    return None


class Tally:
    """Outcomes of one write across zones, fed by the drivers as each zone answers."""

    def __init__(
        self,
        op: str,
        args: tuple[Any, ...],
        zones: tuple[str, ...],
        policy: str,
        local: str,
        stats: CacheStats,
    ) -> None:
        self.op = op
        self.args = args
        self.zones = zones
        self.policy = policy
        self.local = local
        self._stats = stats
        self._lock = threading.Lock()
        self._acks: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        n = len(zones)
        self._need = n if policy == "all" else (n // 2 + 1 if policy == "quorum" else 1)
        self.result: WriteResult | None = None
        self.on_decided: Callable[[], None] | None = None

    def record(self, zone: str, ok: bool, reply: Any) -> None:
        """One zone answered (``ok`` False: ``reply`` is the error it raised)."""
        problem = _is_ack(self.op, reply) if ok else f"{type(reply).__name__}: {reply}"
        with self._lock:
            if problem is None:
                self._acks[zone] = reply
            else:
                self._failed[zone] = problem
            decided = self.result is None and self._decided()
            if decided:
                self.result = self.snapshot()
        if problem is None:
            self._stats.count(zone, self.op, "ok")
        else:
            self._stats.count(zone, self.op, "error")
            self._stats.write_failed(zone)
        if decided and self.on_decided is not None:
            self.on_decided()

    def _decided(self) -> bool:
        acks, failed = len(self._acks), len(self._failed)
        if self.policy == "local":
            return self.local in self._acks or self.local in self._failed
        if acks >= self._need or failed > len(self.zones) - self._need:
            return True
        return acks + failed == len(self.zones)

    def _ok(self) -> bool:
        if self.policy == "local":
            return self.local in self._acks
        return len(self._acks) >= self._need

    def snapshot(self) -> WriteResult:
        """The result as of now (zones that have not answered are pending)."""
        done = self._acks.keys() | self._failed.keys()
        return WriteResult(
            op=self.op,
            policy=self.policy,
            ok=self._ok(),
            acknowledged=tuple(z for z in self.zones if z in self._acks),
            failed=dict(self._failed),
            pending=tuple(z for z in self.zones if z not in done),
            replies=dict(self._acks),
        )


class CacheCore:
    """Keys, values and zone routing of one cache; shared by both drivers."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.name = config.name
        self.key = key_encoder(config.hash_long_keys)
        self.serde = config.serde
        self.order = config.zone_order
        self.local = config.local_zone
        # writes go to every zone, local first (the sync driver runs the first one itself)
        self.write_zones = (self.local, *(z for z in config.zones if z != self.local))
        self.stats = CacheStats(tuple(config.zones))
        self._repair = config.read_repair
        self._repair_ttl = config.effective_repair_ttl
        self._max_size = config.max_value_size
        # how long a request waits for another caller's fetch of the same key before fetching
        self.wait_timeout = config.timeout * (len(config.zones) + 1) + 1.0

    # -- per-request dedup --------------------------------------------------------------

    def read_flow(self, key: bytes) -> Flow:
        """``get_flow`` behind the request scope's memo and single flight; returns the value."""
        scope = current_scope()
        if scope is None:
            value, _ = yield from self.get_flow(key)
            return value
        memo, lock, mkey = scope.memo, scope.lock, (self.name, key)
        flight, leader = join(memo, lock, mkey)
        if not leader:
            shared = not flight.done
            value = (yield (WAIT, flight, lock)) if shared else flight.value
            if value is not RETRY:
                self.stats.dedup(shared)
                return value
            value, _ = yield from self.get_flow(key)
            return value
        value, certain = RETRY, False
        try:
            value, certain = yield from self.get_flow(key)
        finally:
            finish(memo, lock, mkey, flight, value if certain else RETRY, keep=certain)
        return value

    def read_many_flow(self, keys: list[bytes]) -> Flow:
        """``get_many_flow`` behind the memo: only keys the request has not seen are fetched."""
        scope = current_scope()
        if scope is None:
            unscoped, _ = yield from self.get_many_flow(keys)
            return unscoped
        memo, lock, name = scope.memo, scope.lock, self.name
        out: dict[bytes, Any] = {}
        lead: dict[bytes, Any] = {}
        waiting = []
        for key in dict.fromkeys(keys):
            flight, leader = join(memo, lock, (name, key))
            if leader:
                lead[key] = flight
            elif flight.done and flight.value is not RETRY:
                self.stats.dedup(False)
                if flight.value is not MISS:
                    out[key] = flight.value
            else:
                waiting.append((key, flight))
        if lead:
            found: dict[bytes, Any] = {}
            certain = False
            try:
                found, certain = yield from self.get_many_flow(list(lead))
            finally:
                for key, flight in lead.items():
                    keep = key in found or certain
                    value = found.get(key, MISS) if keep else RETRY
                    finish(memo, lock, (name, key), flight, value, keep)
            out.update(found)
        again = []
        for key, flight in waiting:
            value = yield (WAIT, flight, lock)
            if value is RETRY:
                again.append(key)
                continue
            self.stats.dedup(True)
            if value is not MISS:
                out[key] = value
        if again:
            more, _ = yield from self.get_many_flow(again)
            out.update(more)
        return out

    def note_writes(self, keys: list[bytes], known: Mapping[bytes, Any] | None) -> None:
        """Keep the request's memo true to a write: remember ``known`` values, forget the rest."""
        scope = current_scope()
        if scope is None:
            return
        memo, name = scope.memo, self.name
        with scope.lock:
            for key in keys:
                if known is not None and key in known:
                    remember(memo, (name, key), known[key])
                else:
                    memo.pop((name, key), None)

    # -- values and arguments --------------------------------------------------------

    def encode(self, user_key: str | bytes, value: Any) -> Item:
        data, flags = self.serde.dumps(value)
        if len(data) > self._max_size:
            raise ValueTooLargeError(user_key, len(data), self._max_size)
        return data, flags

    def ttl(self, ttl: int | None) -> int:
        if ttl is None:
            return self.config.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise ConfigError("ttl", f"must be an integer >= 0 (seconds), got {ttl!r}")
        return ttl

    # -- reads ------------------------------------------------------------------------

    def get_flow(self, key: bytes) -> Flow:
        """Local zone, then the others; returns ``(value or MISS, certain)``.

        ``certain`` is False when a zone failed before anyone answered with a hit, so a miss
        may be wrong and must not be remembered for the request.
        """
        stats, local = self.stats, self.local
        local_missed, certain = False, True
        for zone in self.order:
            ok, reply = yield (CALL, zone, "get", (key,))
            if not ok:
                stats.count(zone, "get", "error")
                certain = False
                continue
            if reply is None:
                stats.count(zone, "get", "miss")
                local_missed = local_missed or zone == local
                continue
            stats.count(zone, "get", "hit")
            if zone != local:
                stats.remote_hit(zone)
                if local_missed and self._repair:
                    yield from self._repair_flow({key: reply})
            return self.serde.loads(*reply), True
        return MISS, certain

    def get_many_flow(self, keys: list[bytes]) -> Flow:
        """Ask each zone in turn for the keys still missing; returns ``(found, certain)``."""
        stats, local = self.stats, self.local
        found: dict[bytes, Item] = {}
        remaining = keys
        repair: dict[bytes, Item] = {}
        local_missing: set[bytes] = set()
        certain = True
        for zone in self.order:
            if not remaining:
                break
            ok, reply = yield (CALL, zone, "get_many", (remaining,))
            if not ok:
                stats.count(zone, "get_many", "error", len(remaining))
                certain = False
                continue
            hits: dict[bytes, Item] = reply
            if hits:
                stats.count(zone, "get_many", "hit", len(hits))
                found.update(hits)
                if zone != local:
                    stats.remote_hit(zone, len(hits))
                    repair.update((k, v) for k, v in hits.items() if k in local_missing)
            if len(hits) < len(remaining):
                stats.count(zone, "get_many", "miss", len(remaining) - len(hits))
                remaining = [k for k in remaining if k not in hits]
                if zone == local:
                    local_missing.update(remaining)
            else:
                remaining = []
        if repair and self._repair:
            yield from self._repair_flow(repair)
        loads = self.serde.loads
        return {k: loads(*item) for k, item in found.items()}, certain

    def _repair_flow(self, items: dict[bytes, Item]) -> Flow:
        # add, not set: a write that reached the local zone meanwhile is newer than our copy.
        ok, reply = yield (CALL, self.local, "add_many", (items, self._repair_ttl))
        if ok:
            repaired = len(items) - len(reply)
            if repaired:
                self.stats.repaired(self.local, repaired)
                self.stats.count(self.local, "repair", "ok", repaired)
        else:
            self.stats.count(self.local, "repair", "error")
        return None

    # -- writes -----------------------------------------------------------------------

    def tally(self, op: str, args: tuple[Any, ...]) -> Tally:
        return Tally(op, args, self.write_zones, self.config.write_policy, self.local, self.stats)

    def finish(
        self, tally: Tally, keys: list[bytes], known: Mapping[bytes, Any] | None
    ) -> WriteResult:
        """The caller's answer: the decided result, or CacheWriteError when the policy failed.

        Args:
            keys: the keys written, and ``known``: their values now (MISS after a delete), or
                None when the write leaves them unknown (add, incr); the request memo follows.
        """
        result = tally.result or tally.snapshot()
        self.note_writes(keys, known if result.ok else None)
        if not result.ok:
            raise CacheWriteError(
                f"cache {self.name!r}: {tally.op} did not satisfy write policy {tally.policy!r} "
                f"(acknowledged {list(result.acknowledged)}, failed {dict(result.failed)}, "
                f"pending {list(result.pending)})",
                result,
            )
        return result

    def counter_args(self, key: str | bytes, delta: int) -> tuple[bytes, int]:
        """incr/decr: the encoded key and a validated delta (memcached takes no negatives)."""
        if isinstance(delta, bool) or not isinstance(delta, int) or delta < 0:
            raise ValueError(f"delta must be an integer >= 0, got {delta!r}")
        return self.key(key), delta

    def counter_value(self, result: WriteResult) -> int | None:
        """incr/decr: the new value from the first zone in read order that has the key."""
        for zone in self.order:
            value = result.replies.get(zone)
            if value is not None:
                return int(value)
        return None
