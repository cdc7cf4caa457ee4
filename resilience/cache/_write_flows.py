"""Every write of a cache as a flow: what to write where, and what the caller is told.

A write flow yields ``(WRITE, op, args, zones, tally)`` (the driver sends the zone calls and
sends the :class:`~._writes.Tally` back once the write policy is decided) and, for ``cas``, a
``CALL`` step; it returns the caller's answer or raises the caller's error. Arguments are
checked when the flow is made, before anything is sent. The drivers only run flows, so a write
means the same on the blocking and the asyncio cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymemcache.exceptions import MemcacheClientError

from ..context import current_scope
from ..errors import CacheClientError, CacheWriteError, ConfigError, ValueTooLargeError
from ._catchup import CatchUp
from ._config import CacheConfig
from ._fence import Fence
from ._flight import remember
from ._protocol import Item
from ._serde import Serde
from ._stats import CacheStats
from ._steps import CALL, MISS, WRITE, Flow
from ._writes import Tally, WriteResult

__all__ = ["MAX_DELTA", "WriteFlows"]

MAX_DELTA = 2**64 - 1  # memcached counters are unsigned 64-bit


class WriteFlows:
    """The write half of :class:`~._core.CacheCore` (a mixin: it uses the core's keys,
    serde, zones, stats, catch-up queues and fence)."""

    name: str
    local: str
    order: tuple[str, ...]
    write_zones: tuple[str, ...]
    stats: CacheStats
    catch_up: Mapping[str, CatchUp]
    fence: Fence
    config: CacheConfig
    key: Callable[[str | bytes], bytes]
    serde: Serde

    def encode(self, user_key: str | bytes, value: Any) -> Item:
        data, flags = self.serde.dumps(value)
        limit = self.config.max_value_size
        if len(data) > limit:
            raise ValueTooLargeError(user_key, len(data), limit)
        return data, flags

    def ttl(self, ttl: int | None) -> int:
        if ttl is None:
            return self.config.default_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise ConfigError("ttl", f"must be an integer >= 0 (seconds), got {ttl!r}")
        return ttl

    # -- the flows ----------------------------------------------------------------------

    def write(
        self,
        op: str,
        args: tuple[Any, ...],
        keys: list[bytes],
        known: Mapping[bytes, Any] | None,
        user_key: str | bytes | None = None,
    ) -> Flow[WriteResult]:
        """One write to every zone; ``known``: the keys' values after it (see :meth:`finish`)."""
        tally = yield (WRITE, op, args, None, None)
        return self.finish(tally, keys, known, user_key)

    def set_flow(self, key: str | bytes, value: Any, ttl: int | None) -> Flow[WriteResult]:
        k = self.key(key)
        return self.write("set", (k, self.encode(key, value), self.ttl(ttl)), [k], {k: value}, key)

    def set_many_flow(
        self, mapping: Mapping[str | bytes, Any], ttl: int | None
    ) -> Flow[WriteResult]:
        items: dict[bytes, Item] = {}
        values: dict[bytes, Any] = {}
        for user_key, value in mapping.items():
            key = self.key(user_key)
            items[key] = self.encode(user_key, value)
            values[key] = value
        return self.write("set_many", (items, self.ttl(ttl)), list(items), values)

    def store_flow(
        self, op: str, key: str | bytes, value: Any, ttl: int | None
    ) -> Flow[WriteResult]:
        """add / replace: stored where the key is absent / present, zone by zone."""
        k = self.key(key)
        return self.write(op, (k, self.encode(key, value), self.ttl(ttl)), [k], None, key)

    def concat_flow(self, op: str, key: str | bytes, data: str | bytes) -> Flow[WriteResult]:
        """append / prepend: raw bytes (or str) added to the stored bytes, no serde."""
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, bytes):
            raise TypeError(f"append/prepend take str or bytes, not {type(data).__name__}")
        k = self.key(key)
        return self.write(op, (k, (data, 0), 0), [k], None, key)

    def delete_flow(self, key: str | bytes) -> Flow[WriteResult]:
        k = self.key(key)
        return self.write("delete", (k,), [k], {k: MISS}, key)

    def delete_many_flow(self, keys: Iterable[str | bytes]) -> Flow[WriteResult]:
        encoded, _ = self.keys(keys)
        return self.write("delete_many", (encoded,), encoded, dict.fromkeys(encoded, MISS))

    def touch_flow(self, key: str | bytes, ttl: int | None) -> Flow[WriteResult]:
        k = self.key(key)
        return self.write("touch", (k, self.ttl(ttl)), [k], None, key)

    def counter_flow(self, op: str, key: str | bytes, delta: int) -> Flow[int | None]:
        """incr / decr in every zone; the local zone's new value (or the first zone's in read
        order that has the key), None when absent everywhere."""
        if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta <= MAX_DELTA:
            raise ValueError(f"delta must be an integer in 0..2**64-1, got {delta!r}")
        return self._counter(op, self.key(key), delta, key)

    def _counter(self, op: str, k: bytes, delta: int, user_key: str | bytes) -> Flow[int | None]:
        result = yield from self.write(op, (k, delta), [k], None, user_key)
        for zone in self.order:
            value = result.replies.get(zone)
            if value is not None:
                return int(value)
        return None

    def cas_flow(
        self, key: str | bytes, value: Any, cas_token: int, ttl: int | None
    ) -> Flow[bool | None]:
        """Compare-and-swap in the local zone, then the winner written to the other zones."""
        k = self.key(key)
        item, t = self.encode(key, value), self.ttl(ttl)
        if isinstance(cas_token, bool) or not isinstance(cas_token, int) or cas_token < 0:
            raise ValueError(f"cas_token must be the integer gets() returned, got {cas_token!r}")
        return self._cas(key, k, value, item, t, cas_token)

    def _cas(
        self, key: str | bytes, k: bytes, value: Any, item: Item, t: int, token: int
    ) -> Flow[bool | None]:
        local = self.local
        ok, reply = yield (CALL, local, "cas", (k, item, t, token))
        self.note_writes([k], None)
        if not ok:
            if isinstance(reply, MemcacheClientError):
                raise CacheClientError("cas", key, str(reply)) from reply
            message = f"cache {self.name!r}: cas failed in the local zone: {reply}"
            raise CacheWriteError(message, None)
        if reply is not True:
            changed: bool | None = reply  # False: the key changed since gets(); None: absent
            return changed
        tally = self.tally("set", (k, item, t))
        tally.record(local, True, True)
        others = tuple(z for z in tally.zones if z != local)
        tally = yield (WRITE, "set", (k, item, t), others, tally)
        self.finish(tally, [k], {k: value}, key)
        return True

    def flush_flow(self, zones: Iterable[str], delay: int) -> Flow[WriteResult]:
        """flush_all in the named zones (never a default); every one of them must flush."""
        if isinstance(zones, str):
            raise ConfigError("zones", f"must be a list of zone names, got {zones!r}")
        names = tuple(dict.fromkeys(zones))
        known = self.config.zones
        if not names or any(z not in known for z in names):
            raise ConfigError(
                "zones", f"flush_all needs zones among {list(known)}, got {list(names)}"
            )
        return self._flush(names, delay)

    def _flush(self, names: tuple[str, ...], delay: int) -> Flow[WriteResult]:
        tally = self.tally("flush_all", (delay,), names)
        tally = yield (WRITE, "flush_all", (delay,), names, tally)
        result = self.finish(tally, [], None)
        for z in result.acknowledged:
            self.catch_up[z].clear()
        self.forget_all()
        return result

    # -- pieces -------------------------------------------------------------------------

    def keys(
        self, keys: Iterable[str | bytes]
    ) -> tuple[list[bytes], dict[bytes, list[str | bytes]]]:
        """Encoded keys (deduplicated, in order) and the caller's keys each one stands for."""
        if isinstance(keys, (str, bytes)):
            raise TypeError("keys must be an iterable of keys, not a single str or bytes")
        encode = self.key
        users: dict[bytes, list[str | bytes]] = {}
        for key in keys:
            users.setdefault(encode(key), []).append(key)
        return list(users), users

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
