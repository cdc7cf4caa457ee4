"""The decision core shared by the sync and async caches: no IO, no waiting.

Reads are generators (*flows*) that yield the zone calls they want and are sent each call's
outcome ``(ok, reply_or_error)``; they decide the zone order, what to re-ask and what to
repair. Writes are a :class:`~._writes.Tally` that the drivers feed with each zone's outcome.

A zone is not asked for a key it missed a write of, or is still writing after the writer was
answered (its catch-up queue holds the key): its copy may be stale. A stored value that cannot
be decoded is a miss in that zone (counted as ``undecodable``) and the next zone is asked; it
never fails the read or a ``get_many``.

Read repair copies a remote hit into the local zone with ``add`` only when the local zone
answered a miss while no write of the key was in flight in this process, and only if none
started before the copy was made (``_fence``); a copy that raced a write anyway, or whose
outcome is unknown, is caught up (deleted later) rather than trusted.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from pymemcache.exceptions import MemcacheClientError

from ..context import current_scope
from ..errors import (
    BulkheadFullError,
    CacheClientError,
    CacheWriteError,
    CircuitOpenError,
    ConfigError,
    ValueTooLargeError,
)
from ._catchup import CatchUp
from ._config import CacheConfig
from ._fence import Fence
from ._flight import RETRY, finish, join, remember
from ._keys import key_encoder
from ._protocol import Item
from ._stats import CacheStats
from ._sync_node import AcquireTimeoutError
from ._writes import Tally, WriteResult

__all__ = ["CALL", "MISS", "WAIT", "CacheCore", "Flow"]

CALL = 0  # step: (CALL, zone, op, args) -> the driver sends back (ok, reply or error)
WAIT = 1  # step: (WAIT, flight, lock) -> the driver waits for the flight and sends its value

MAX_DELTA = 2**64 - 1  # memcached counters are unsigned 64-bit


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()
_UNDECODABLE: Any = object()
# a zone call that failed with one of these sent nothing
_NOT_SENT = (AcquireTimeoutError, CircuitOpenError, BulkheadFullError)

Step = tuple[Any, ...]
Flow = Generator[Step, Any, Any]


class CacheCore:
    """Keys, values and zone routing of one cache; shared by both drivers."""

    def __init__(self, config: CacheConfig, catch_up: Mapping[str, CatchUp], fence: Fence) -> None:
        self.config = config
        self.name = config.name
        self.key = key_encoder(config.hash_long_keys)
        self.serde = config.serde
        self.order = config.zone_order
        self.local = config.local_zone
        # writes go to every zone, local first (the sync driver reads its reply first)
        self.write_zones = (self.local, *(z for z in config.zones if z != self.local))
        self.stats = CacheStats(tuple(config.zones))
        self.catch_up = catch_up
        self.fence = fence
        self._repair = config.read_repair
        self._repair_ttl = config.effective_repair_ttl
        self._max_size = config.max_value_size
        # how long a request waits for another caller's fetch of the same key before fetching
        self.wait_timeout = (config.timeout + config.acquire_timeout) * (len(config.zones) + 1)

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

    def forget_all(self) -> None:
        """A flush: the request's memo of this cache is void."""
        scope = current_scope()
        if scope is None:
            return
        with scope.lock:
            for mkey in [k for k in scope.memo if isinstance(k, tuple) and k[0] == self.name]:
                del scope.memo[mkey]

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

    def decode(self, zone: str, op: str, item: Item) -> Any:
        """The stored value, or ``_UNDECODABLE`` (counted) when the serde cannot read it."""
        try:
            return self.serde.loads(item[0], item[1])
        except Exception:
            self.stats.count(zone, op, "undecodable")
            return _UNDECODABLE

    def _failed(self, zone: str, op: str, error: Any, n: int = 1) -> None:
        if isinstance(error, AcquireTimeoutError):
            self.stats.acquire_timeout(zone)
        else:
            self.stats.count(zone, op, "error", n)

    # -- reads ------------------------------------------------------------------------

    def local_hit(self, key: bytes, outcome: tuple[bool, Any]) -> Any:
        """The value if ``outcome``, the local zone's answer to a get, is a hit that decodes
        (counted), else ``MISS`` (nothing counted: pass the outcome to ``get_flow``)."""
        ok, reply = outcome
        if not ok or reply is None:
            return MISS
        try:
            value = self.serde.loads(reply[0], reply[1])
        except Exception:
            return MISS
        self.stats.count(self.local, "get", "hit")
        return value

    def get_flow(self, key: bytes, local_outcome: tuple[bool, Any] | None = None) -> Flow:
        """Local zone, then the others; returns ``(value or MISS, certain)``.

        ``certain`` is False when a zone failed before anyone answered with a hit, so a miss
        may be wrong and must not be remembered for the request. ``local_outcome``: the local
        zone was asked already (the driver's fast path) and answered this.
        """
        stats, local, catch_up = self.stats, self.local, self.catch_up
        mark = None  # the fence's mark when the local zone answered a miss: repair allowed
        certain = True
        for zone in self.order:
            if local_outcome is not None and zone == local:
                ok, reply = local_outcome
            elif key in catch_up[zone]:
                continue
            else:
                ok, reply = yield (CALL, zone, "get", (key,))
            if not ok:
                self._failed(zone, "get", reply)
                certain = False
                continue
            if reply is None:
                stats.count(zone, "get", "miss")
                if zone == local and self._repair:
                    mark = self.fence.mark(key)
                continue
            value = self.decode(zone, "get", reply)
            if value is _UNDECODABLE:
                continue
            stats.count(zone, "get", "hit")
            if zone != local:
                stats.remote_hit(zone)
                if mark is not None:
                    yield from self._repair_flow({key: reply}, {key: mark})
            return value, True
        return MISS, certain

    def get_many_flow(self, keys: list[bytes]) -> Flow:
        """Ask each zone in turn for the keys still missing; returns ``(found, certain)``."""
        stats, local, fence = self.stats, self.local, self.fence
        found: dict[bytes, Any] = {}
        remaining = keys
        repair: dict[bytes, Item] = {}
        marks: dict[bytes, int] = {}  # keys the local zone answered missing, and their marks
        certain = True
        for zone in self.order:
            if not remaining:
                break
            stale = self.catch_up[zone]
            ask = [k for k in remaining if k not in stale] if stale.skips else remaining
            if not ask:
                continue
            ok, reply = yield (CALL, zone, "get_many", (ask,))
            if not ok:
                self._failed(zone, "get_many", reply, len(ask))
                certain = False
                continue
            hits: dict[bytes, Item] = reply
            good = 0
            for k, item in hits.items():
                value = self.decode(zone, "get_many", item)
                if value is _UNDECODABLE:
                    continue
                found[k] = value
                good += 1
                if k in marks:
                    repair[k] = item
            if good:
                stats.count(zone, "get_many", "hit", good)
                if zone != local:
                    stats.remote_hit(zone, good)
            if good < len(ask):
                stats.count(zone, "get_many", "miss", len(ask) - len(hits))
            if zone == local and self._repair:
                for k in ask:
                    if k not in hits:
                        mark = fence.mark(k)
                        if mark is not None:
                            marks[k] = mark
            remaining = [k for k in remaining if k not in found]
        if repair:
            yield from self._repair_flow(repair, marks)
        return found, certain

    def gets_flow(self, key: bytes) -> Flow:
        """``gets`` in the local zone only (a cas token is one server's); ``(value, token)``."""
        zone = self.local
        ok, reply = yield (CALL, zone, "gets_many", ([key],))
        if not ok:
            self._failed(zone, "gets", reply)
            return MISS, None
        item = reply.get(key)
        if item is None:
            self.stats.count(zone, "gets", "miss")
            return MISS, None
        value = self.decode(zone, "gets", item[:2])
        if value is _UNDECODABLE:
            return MISS, None
        self.stats.count(zone, "gets", "hit")
        return value, item[2]

    def _repair_flow(self, items: dict[bytes, Item], marks: Mapping[bytes, int]) -> Flow:
        """Copy remote hits into the local zone with ``add`` (a write that reached the local
        zone meanwhile is newer than our copy), unless a write of the key started since the
        local zone's miss; a copy that raced one, or whose outcome is unknown, is caught up."""
        local, fence = self.local, self.fence
        queue = self.catch_up[local]
        items = {
            k: item for k, item in items.items() if k not in queue and fence.unchanged(k, marks[k])
        }
        if not items:
            return None
        ok, reply = yield (CALL, local, "add_many", (items, self._repair_ttl))
        if ok:
            not_stored = set(reply)
            stored = [k for k in items if k not in not_stored]
            raced = [k for k in stored if not fence.unchanged(k, marks[k])]
            if raced:
                queue.add(raced)
            if stored:
                self.stats.repaired(local, len(stored))
                self.stats.count(local, "repair", "ok", len(stored))
        else:
            if not isinstance(reply, _NOT_SENT):
                queue.add(list(items))  # it may still land
            self.stats.count(local, "repair", "error")
        return None

    # -- writes -----------------------------------------------------------------------

    def tally(self, op: str, args: tuple[Any, ...], zones: tuple[str, ...] | None = None) -> Tally:
        policy = self.config.write_policy if zones is None else "all"
        return Tally(
            op,
            args,
            self.write_zones if zones is None else zones,
            policy,
            self.local,
            self.stats,
            self.catch_up,
            self.fence,
        )

    def finish(
        self,
        tally: Tally,
        keys: list[bytes],
        known: Mapping[bytes, Any] | None,
        user_key: str | bytes | None = None,
    ) -> WriteResult:
        """The caller's answer: the decided result, or the error the caller must see.

        Args:
            keys: the keys written, and ``known``: their values now (MISS after a delete), or
                None when the write leaves them unknown (add, incr); the request memo follows.
            user_key: the caller's key, for a ``CacheClientError``.
        """
        result = tally.final()
        client = tally.client_error
        self.note_writes(keys, known if result.ok and client is None else None)
        if client is not None:
            raise CacheClientError(tally.op, user_key, str(client)) from client
        if not result.ok:
            raise CacheWriteError(
                f"cache {self.name!r}: {tally.op} did not satisfy write policy {tally.policy!r} "
                f"(acknowledged {list(result.acknowledged)}, failed {dict(result.failed)}, "
                f"pending {list(result.pending)})",
                result,
            )
        return result

    def counter_args(self, key: str | bytes, delta: int) -> tuple[bytes, int]:
        """incr/decr: the encoded key and a validated delta (memcached takes 0..2**64-1)."""
        if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta <= MAX_DELTA:
            raise ValueError(f"delta must be an integer in 0..2**64-1, got {delta!r}")
        return self.key(key), delta

    def counter_value(self, result: WriteResult) -> int | None:
        """incr/decr: the new value from the first zone in read order that has the key."""
        for zone in self.order:
            value = result.replies.get(zone)
            if value is not None:
                return int(value)
        return None

    @staticmethod
    def is_client_error(error: Any) -> bool:
        return isinstance(error, MemcacheClientError)
