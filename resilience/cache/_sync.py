"""The blocking driver: runs the core's flows on the caller's thread and pipelines writes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..circuit import State
from ..errors import CacheClientError, CacheWriteError
from ._base import CacheBase
from ._core import CALL, MISS, Flow
from ._flight import wait_sync
from ._gate import SyncGate
from ._readthrough import SyncReadThrough
from ._sync_call import SyncCall, start_sync
from ._sync_node import SyncNode
from ._writes import Tally, WriteResult
from ._zones import Zone

__all__ = ["ReplicatedCache"]

_CLOSED = (State.CLOSED, State.FORCED_CLOSED)


class ReplicatedCache(CacheBase[SyncNode], SyncReadThrough):
    """A memcached cache with a full copy per availability zone, for threaded code.

    Reads ask the local zone, then the others; writes go to every zone at once, pipelined
    from the caller's thread (sent to all zones, then every reply read). Each zone
    is a circuit dependency, so a dead or stalled zone is skipped once its breaker opens.
    Inside ``resilience.request_scope()`` a key is fetched at most once per request. The
    options are documented on :class:`CacheBase`; the cache is thread-safe, and a forked
    child process drops the connections it inherited.
    """

    _node_class = SyncNode
    _gate_class = SyncGate

    def _setup(self) -> None:
        self._executor = self._new_executor()

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            self.config.write_workers, thread_name_prefix=f"resilience-cache-{self.name}"
        )

    # -- driving the core -------------------------------------------------------------------

    def _call(self, name: str, op: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        zone = self._zones[name]
        try:
            reply = start_sync(zone, op, args, self.config.acquire_timeout).receive()
        except Exception as exc:
            return False, exc
        if len(zone.catch_up):
            self._catch_up(zone)
        return True, reply

    def _run(self, flow: Flow) -> Any:
        try:
            step = next(flow)
            while True:
                if step[0] == CALL:
                    outcome: Any = self._call(step[1], step[2], step[3])
                else:
                    outcome = wait_sync(step[2], step[1], self._core.wait_timeout)
                step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    def _catch_up(self, zone: Zone[SyncNode]) -> None:
        """The zone answered: if it is closed again, delete what it missed (on a worker)."""
        if zone.dependency.state in _CLOSED and not zone.catch_up.replaying and not self._closed:
            with contextlib.suppress(RuntimeError):  # shutting down
                self._executor.submit(self._replay, zone)

    def _replay(self, zone: Zone[SyncNode]) -> None:
        while not self._closed:
            taken = zone.catch_up.take()
            if not taken:
                return
            ok = True
            try:
                start_sync(
                    zone, "delete_many", ([k for k, _ in taken],), self.config.acquire_timeout
                ).receive()
            except Exception:
                ok = False
            zone.catch_up.done(taken, ok)
            if not ok:
                return

    def _write(
        self,
        op: str,
        args: tuple[Any, ...],
        zones: Iterable[str] | None = None,
        tally: Tally | None = None,
    ) -> Tally:
        """Pipeline one write to ``zones`` (default: every zone): send to all, then read.

        Each zone call is a circuit ticket ended exactly once; a zone whose circuit is open is
        skipped and reported failed. Once the write policy is decided, zones whose replies
        have not arrived yet finish on a write worker and are still counted.
        """
        if tally is None:
            tally = self._core.tally(op, args)
        acquire = self.config.acquire_timeout
        started: list[tuple[str, SyncCall]] = []
        try:
            for name in tally.zones if zones is None else zones:
                try:
                    started.append((name, start_sync(self._zones[name], op, args, acquire)))
                except Exception as exc:
                    tally.record(name, False, exc)
        except BaseException as exc:  # interrupted: what was sent will not be read
            for _, call in started:
                call.abandon()
            tally.interrupted(exc)
            raise
        for i, (name, call) in enumerate(started):
            if tally.result is not None and not call.ready() and self._later(tally, started[i:]):
                break
            try:
                self._receive(tally, name, call)
            except BaseException as exc:
                for _, rest in started[i + 1 :]:
                    rest.abandon()
                tally.interrupted(exc)
                raise
        return tally

    def _receive(self, tally: Tally, name: str, call: SyncCall) -> None:
        try:
            reply = call.receive()
        except Exception as exc:
            tally.record(name, False, exc)
            return
        tally.record(name, True, reply)
        zone = call.zone
        if len(zone.catch_up):
            self._catch_up(zone)

    def _later(self, tally: Tally, rest: list[tuple[str, SyncCall]]) -> bool:
        """Hand zones still to answer to a write worker; False if the cache is closing."""
        try:
            self._executor.submit(self._receive_all, tally, rest)
        except RuntimeError:
            return False
        return True

    def _receive_all(self, tally: Tally, rest: list[tuple[str, SyncCall]]) -> None:
        for name, call in rest:
            self._receive(tally, name, call)

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: str | bytes, default: Any = None) -> Any:
        """The value of ``key``: local zone first, then the others; ``default`` on a miss.

        A zone that fails is skipped; when every zone fails the result is ``default`` (a
        cache outage reads as misses, counted as errors in the metrics).
        """
        value = self._run(self._core.read_flow(self._core.key(key)))
        return default if value is MISS else value

    def get_many(self, keys: Iterable[str | bytes]) -> dict[Any, Any]:
        """The values of the keys that exist; remote zones are asked only for keys still missing."""
        encoded, users = self._keys(keys)
        if not encoded:
            return {}
        return self._by_user_key(self._run(self._core.read_many_flow(encoded)), users)

    def gets(self, key: str | bytes, default: Any = None) -> tuple[Any, int | None]:
        """``(value, cas_token)`` from the local zone, ``(default, None)`` when absent there.

        A cas token belongs to one server, so only the local zone is asked (and the request
        memo is bypassed); pass the token to :meth:`cas`.
        """
        value, token = self._run(self._core.gets_flow(self._core.key(key)))
        return (default if value is MISS else value), token

    # -- writes ---------------------------------------------------------------------------

    def set(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """Store ``value`` in every zone; raises CacheWriteError if the write policy is not met."""
        k = self._core.key(key)
        tally = self._write("set", (k, self._core.encode(key, value), self._core.ttl(ttl)))
        return self._core.finish(tally, [k], {k: value}, key)

    def set_many(self, mapping: Mapping[str | bytes, Any], ttl: int | None = None) -> WriteResult:
        """Store several values in every zone (one pipelined exchange per server)."""
        items, values = self._items(mapping)
        tally = self._write("set_many", (items, self._core.ttl(ttl)))
        return self._core.finish(tally, list(items), values)

    def add(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """Store ``value`` where ``key`` does not exist; ``replies[zone]`` says if it was stored."""
        return self._store("add", key, self._core.encode(key, value), ttl)

    def replace(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """Store ``value`` where ``key`` exists, zone by zone; ``replies[zone]`` says where."""
        return self._store("replace", key, self._core.encode(key, value), ttl)

    def append(self, key: str | bytes, data: str | bytes) -> WriteResult:
        """Add bytes after the stored value in every zone that has ``key`` (raw: no serde).

        The item keeps its flags, so appending to a str, bytes or int value stays one; a
        value the serde stored as JSON may no longer decode (then it reads as a miss).
        """
        return self._store("append", key, self._raw(data), 0)

    def prepend(self, key: str | bytes, data: str | bytes) -> WriteResult:
        """Add bytes before the stored value in every zone that has ``key``; see :meth:`append`."""
        return self._store("prepend", key, self._raw(data), 0)

    def _store(self, op: str, key: str | bytes, item: Any, ttl: int | None) -> WriteResult:
        k = self._core.key(key)
        tally = self._write(op, (k, item, self._core.ttl(ttl)))
        return self._core.finish(tally, [k], None, key)

    def cas(
        self, key: str | bytes, value: Any, cas_token: int, ttl: int | None = None
    ) -> bool | None:
        """Compare-and-swap in the local zone, then replicate the winner to the other zones.

        Returns True when the local zone stored ``value`` (and the other zones were written
        under the write policy, else ``CacheWriteError``), False when the key changed since
        :meth:`gets` (nothing written anywhere), None when the local zone has no such key.
        """
        k = self._core.key(key)
        item, t = self._core.encode(key, value), self._core.ttl(ttl)
        if isinstance(cas_token, bool) or not isinstance(cas_token, int) or cas_token < 0:
            raise ValueError(f"cas_token must be the integer gets() returned, got {cas_token!r}")
        local = self._core.local
        ok, reply = self._call(local, "cas", (k, item, t, cas_token))
        self._core.note_writes([k], None)
        if not ok:
            if isinstance(reply, Exception) and self._core.is_client_error(reply):
                raise CacheClientError("cas", key, str(reply)) from reply
            message = f"cache {self.name!r}: cas failed in the local zone: {reply}"
            raise CacheWriteError(message, None)
        if reply is not True:
            return reply  # type: ignore[no-any-return]
        tally = self._core.tally("set", (k, item, t))
        tally.record(local, True, True)
        others = [z for z in tally.zones if z != local]
        self._core.finish(self._write("set", (k, item, t), others, tally), [k], {k: value}, key)
        return True

    def delete(self, key: str | bytes) -> WriteResult:
        """Delete ``key`` in every zone; ``replies[zone]`` says if it existed there."""
        k = self._core.key(key)
        return self._core.finish(self._write("delete", (k,)), [k], {k: MISS}, key)

    def delete_many(self, keys: Iterable[str | bytes]) -> WriteResult:
        """Delete several keys in every zone."""
        encoded, _ = self._keys(keys)
        tally = self._write("delete_many", (encoded,))
        return self._core.finish(tally, encoded, dict.fromkeys(encoded, MISS))

    def touch(self, key: str | bytes, ttl: int | None = None) -> WriteResult:
        """Give ``key`` a new ttl in every zone."""
        k = self._core.key(key)
        return self._core.finish(self._write("touch", (k, self._core.ttl(ttl))), [k], None, key)

    def incr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Add ``delta`` to a stored integer in every zone; the new value, or None if absent.

        Zones are counted independently (memcached has no cross-server increment): the value
        returned is the local zone's, or the first zone's in read order that has the key. A
        value that is not a number raises ``CacheClientError`` (the zones are not blamed).
        """
        return self._counter("incr", key, delta)

    def decr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Subtract ``delta`` (memcached stops at 0); see :meth:`incr`."""
        return self._counter("decr", key, delta)

    def _counter(self, op: str, key: str | bytes, delta: int) -> int | None:
        args = self._core.counter_args(key, delta)
        result = self._core.finish(self._write(op, args), [args[0]], None, key)
        return self._core.counter_value(result)

    def flush_all(self, *, zones: Iterable[str], delay: int = 0) -> WriteResult:
        """Invalidate every item of every server in the named zones (``zones`` is required:
        flushing a whole cache is never a default). Raises CacheWriteError unless every
        named zone flushed."""
        names = self._flush_zones(zones)
        tally = self._core.tally("flush_all", (delay,), names)
        result = self._core.finish(self._write("flush_all", (delay,), names, tally), [], None)
        for z in result.acknowledged:
            self._zones[z].catch_up.clear()
        self._core.forget_all()
        return result

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and stop the write threads (pending writes finish first)."""
        self._mark_closed()
        self._executor.shutdown(wait=True)
        for zone in self._zones.values():
            for node in zone.nodes.values():
                node.close()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._executor = self._new_executor()  # the parent's worker threads are not here

    def __enter__(self) -> ReplicatedCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
