"""The blocking driver: runs the core's flows on the caller's thread and pipelines writes."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from ..circuit import MISSING, Guard, Ticket
from ..errors import CacheError
from ._base import DEFAULT_LOADER_CONCURRENCY, DEFAULT_LOADER_TIMEOUT, CacheBase, FromFallback
from ._core import CALL, MISS, Flow, Tally, WriteResult
from ._flight import RETRY, Failed, finish, join, wait_sync
from ._nodes import SyncNode
from ._zones import Sent, run_sync, send_sync

__all__ = ["ReplicatedCache"]

log = logging.getLogger("resilience.cache")

P = ParamSpec("P")
T = TypeVar("T")
_Started = tuple[str, Ticket, Sent]  # a zone whose part of a write is sent, replies unread


class ReplicatedCache(CacheBase[SyncNode]):
    """A memcached cache with a full copy per availability zone, for threaded code.

    Reads ask the local zone, then the others; writes go to every zone at once, pipelined
    from the caller's thread (sent to all zones, then every reply read). Each zone
    is a circuit dependency, so a dead or stalled zone is skipped once its breaker opens.
    Inside ``resilience.request_scope()`` a key is fetched at most once per request. The
    constructor's options are documented on :class:`CacheBase`; the cache is thread-safe.
    """

    _node_class = SyncNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._executor = ThreadPoolExecutor(
            self.config.write_workers, thread_name_prefix=f"resilience-cache-{self.name}"
        )

    # -- driving the core -------------------------------------------------------------------

    def _run(self, flow: Flow) -> Any:
        zones = self._zones
        try:
            step = next(flow)
            while True:
                if step[0] == CALL:
                    zone = zones[step[1]]
                    try:
                        outcome: Any = (
                            True,
                            zone.dependency.call(run_sync, zone, step[2], step[3]),
                        )
                    except Exception as exc:
                        outcome = (False, exc)
                else:
                    outcome = wait_sync(step[2], step[1], self._core.wait_timeout)
                step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    def _write(self, op: str, args: tuple[Any, ...]) -> Tally:
        """Pipeline one write to every zone from this thread: send to all, then read replies.

        Each zone call is a circuit ticket (FIT fault, breaker, permits) ended exactly once; a
        zone whose circuit is open is skipped and reported failed. Once the write policy is
        decided (a quorum or the local zone answered, or "all" can no longer be met), zones
        whose replies have not arrived yet finish on a write worker and are still counted.
        """
        tally = self._core.tally(op, args)
        started: list[_Started] = []
        try:
            for zone in tally.zones:
                flight = self._send(tally, zone)
                if flight is not None:
                    started.append(flight)
        except BaseException:  # interrupted: what was sent will not be read
            _drop(started)
            raise
        for i, (zone, ticket, sent) in enumerate(started):
            if tally.result is not None and not sent.ready() and self._later(tally, started[i:]):
                break
            try:
                self._receive(tally, zone, ticket, sent)
            except BaseException:
                _drop(started[i + 1 :])
                raise
        return tally

    def _send(self, tally: Tally, name: str) -> _Started | None:
        """Admit and send one zone's part of a write; None when the zone is done already."""
        zone = self._zones[name]
        try:
            ticket = zone.dependency.begin()
        except Exception as exc:  # open circuit or full semaphore: skipped, reported failed
            tally.record(name, False, exc)
            return None
        fault = ticket.fault
        with _settling(tally, name, ticket):
            if fault is None:
                return name, ticket, send_sync(zone, tally.op, tally.args)
            # the fault wraps the send as it would wrap a call: raise, delay, or hang past
            # the timeout (a call that returns late is a timeout, as under call())
            timeout = zone.dependency.policy.timeout
            began = time.perf_counter()
            sent = fault.wrap_sync(send_sync, timeout)(zone, tally.op, tally.args)
            if time.perf_counter() - began <= timeout:
                return name, ticket, sent
            sent.abandon()
            tally.record(name, False, ticket.timeout())
        return None

    @staticmethod
    def _receive(tally: Tally, name: str, ticket: Ticket, sent: Sent) -> None:
        """Read one zone's replies (each read bounded by the socket timeout); end its ticket."""
        received = False
        with _settling(tally, name, ticket):
            reply = sent.receive()
            received = True
        if received:
            ticket.success()
            tally.record(name, True, reply)

    def _later(self, tally: Tally, rest: list[_Started]) -> bool:
        """Hand zones still to answer to a write worker; False if the cache is closing."""
        try:
            self._executor.submit(self._receive_all, tally, rest)
        except RuntimeError:  # the executor is shut down: read them here
            return False
        return True

    def _receive_all(self, tally: Tally, rest: list[_Started]) -> None:
        for zone, ticket, sent in rest:
            self._receive(tally, zone, ticket, sent)

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

    # -- writes ---------------------------------------------------------------------------

    def set(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """Store ``value`` in every zone; raises CacheWriteError if the write policy is not met."""
        k = self._core.key(key)
        tally = self._write("set", (k, self._core.encode(key, value), self._core.ttl(ttl)))
        return self._core.finish(tally, [k], {k: value})

    def set_many(self, mapping: Mapping[str | bytes, Any], ttl: int | None = None) -> WriteResult:
        """Store several values in every zone (one pipelined exchange per server)."""
        items, values = self._items(mapping)
        tally = self._write("set_many", (items, self._core.ttl(ttl)))
        return self._core.finish(tally, list(items), values)

    def add(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """Store ``value`` where ``key`` does not exist; ``replies[zone]`` says if it was stored."""
        k = self._core.key(key)
        tally = self._write("add", (k, self._core.encode(key, value), self._core.ttl(ttl)))
        return self._core.finish(tally, [k], None)

    def delete(self, key: str | bytes) -> WriteResult:
        """Delete ``key`` in every zone; ``replies[zone]`` says if it existed there."""
        k = self._core.key(key)
        return self._core.finish(self._write("delete", (k,)), [k], {k: MISS})

    def delete_many(self, keys: Iterable[str | bytes]) -> WriteResult:
        """Delete several keys in every zone."""
        encoded, _ = self._keys(keys)
        tally = self._write("delete_many", (encoded,))
        return self._core.finish(tally, encoded, dict.fromkeys(encoded, MISS))

    def touch(self, key: str | bytes, ttl: int | None = None) -> WriteResult:
        """Give ``key`` a new ttl in every zone."""
        k = self._core.key(key)
        return self._core.finish(self._write("touch", (k, self._core.ttl(ttl))), [k], None)

    def incr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Add ``delta`` to a stored integer in every zone; the new value, or None if absent.

        Zones are counted independently (memcached has no cross-server increment): the value
        returned is the local zone's, or the first zone's in read order that has the key.
        """
        return self._counter("incr", key, delta)

    def decr(self, key: str | bytes, delta: int = 1) -> int | None:
        """Subtract ``delta`` (memcached stops at 0); see :meth:`incr`."""
        return self._counter("decr", key, delta)

    def _counter(self, op: str, key: str | bytes, delta: int) -> int | None:
        args = self._core.counter_args(key, delta)
        result = self._core.finish(self._write(op, args), [args[0]], None)
        return self._core.counter_value(result)

    # -- read-through ---------------------------------------------------------------------

    def cached(
        self,
        key: Callable[..., str | bytes],
        ttl: int | None = None,
        *,
        loader_concurrency: int = DEFAULT_LOADER_CONCURRENCY,
        loader_timeout: float = DEFAULT_LOADER_TIMEOUT,
        pool: str = "realtime",
        fallback: Any = MISSING,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a loader: read ``key(*args, **kwargs)`` from the cache, load and store on miss.

        Loads run through the circuit dependency ``cache.<name>.loader.<pool>``: a thread
        pool of ``loader_concurrency`` workers (and as many queue slots) cut off at
        ``loader_timeout`` seconds; one load per key runs at a time in this process and
        concurrent callers of that key share its result. When the loader fails, is rejected or
        its circuit is open, callers get ``fallback`` (a value, or a function called with the
        same arguments) or the error; a fallback value is never written to the cache.

        Args:
            key: builds the cache key from the decorated function's arguments.
            ttl: ttl of loaded values (default: the cache's ``default_ttl``).
            loader_concurrency: loads running at once (default 10).
            loader_timeout: seconds a load may take (default 1.0).
            pool: loader pool name (default ``"realtime"``); give batch callers their own
                (``pool="batch"``) so they cannot starve real-time ones. A pool's settings are
                shared by every decorator that names it.
            fallback: what callers get when the load fails (default: the error).
        """
        guard = self._loader(pool, loader_concurrency, loader_timeout, fallback)
        wait = loader_timeout * 2 + 1.0

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            @functools.wraps(fn)
            def read_through(*args: P.args, **kwargs: P.kwargs) -> T:
                user_key = key(*args, **kwargs)
                value = self.get(user_key, MISS)
                if value is not MISS:
                    return value  # type: ignore[no-any-return]
                return self._load(user_key, ttl, guard, fn, args, kwargs, wait)  # type: ignore[no-any-return]

            return read_through

        return decorate

    def _load(
        self,
        user_key: str | bytes,
        ttl: int | None,
        guard: Guard,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: float,
    ) -> Any:
        k = self._core.key(user_key)
        flight, leader = join(self._loads, self._loads_lock, k)
        if not leader:
            shared = wait_sync(self._loads_lock, flight, wait)
            if shared is not RETRY:
                return _unwrap(shared)
        try:
            value = guard.call(fn, None, args, kwargs)
        except Exception as exc:
            if leader:
                finish(self._loads, self._loads_lock, k, flight, Failed(exc), keep=False)
            raise
        if not isinstance(value, FromFallback):
            try:
                self.set(user_key, value, ttl)
            except CacheError as exc:
                log.warning("cache %s: could not store loaded %r: %s", self.name, user_key, exc)
        if leader:
            finish(self._loads, self._loads_lock, k, flight, value, keep=False)
        return _unwrap(value)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection and stop the write threads (pending writes finish first)."""
        self._closed = True
        self._executor.shutdown(wait=True)
        for zone in self._zones.values():
            for node in zone.nodes.values():
                node.close()

    def __enter__(self) -> ReplicatedCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop(started: list[_Started]) -> None:
    """Give up zones whose replies will not be read: close their connections, end tickets."""
    for _, ticket, sent in started:
        sent.abandon()
        ticket.cancel()


def _unwrap(value: Any) -> Any:
    if isinstance(value, Failed):
        raise value.error
    if isinstance(value, FromFallback):
        return value.value
    return value


@contextlib.contextmanager
def _settling(tally: Tally, name: str, ticket: Ticket) -> Iterator[None]:
    """End ``ticket`` by what the block raised: a timeout, a failure (both recorded for the
    zone), or a cancel for BaseException, which goes on. A block that ends normally has ended
    the ticket itself (or handed it on)."""
    try:
        yield
    except TimeoutError:
        tally.record(name, False, ticket.timeout())
    except Exception as exc:
        ticket.failure(exc)
        tally.record(name, False, exc)
    except BaseException:
        ticket.cancel()
        raise
