"""The asyncio driver: the same core, awaited; writes fan out with one task per zone."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from ..circuit import MISSING, Guard
from ..errors import CacheError
from ._base import DEFAULT_LOADER_CONCURRENCY, DEFAULT_LOADER_TIMEOUT, CacheBase, FromFallback
from ._core import CALL, MISS, Flow, Tally, WriteResult
from ._flight import RETRY, Failed, finish, join, wait_async
from ._nodes import AsyncNode
from ._sync import _unwrap
from ._zones import run_async

__all__ = ["AsyncReplicatedCache"]

log = logging.getLogger("resilience.cache")

P = ParamSpec("P")
T = TypeVar("T")


class AsyncReplicatedCache(CacheBase[AsyncNode]):
    """The asyncio twin of :class:`ReplicatedCache`: the same options, methods as coroutines.

    Connections belong to the event loop that opened them: use one instance per loop.
    ``write_workers`` is unused (zone writes are tasks).
    """

    _node_class = AsyncNode

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._background: set[asyncio.Task[None]] = set()

    async def _run(self, flow: Flow) -> Any:
        zones = self._zones
        try:
            step = next(flow)
            while True:
                if step[0] == CALL:
                    zone = zones[step[1]]
                    try:
                        reply = await zone.dependency.acall(run_async, zone, step[2], step[3])
                        outcome: Any = (True, reply)
                    except Exception as exc:
                        outcome = (False, exc)
                else:
                    outcome = await wait_async(step[2], step[1], self._core.wait_timeout)
                step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        finally:
            flow.close()

    async def _zone_write(self, tally: Tally, zone_name: str) -> None:
        zone = self._zones[zone_name]
        try:
            reply = await zone.dependency.acall(run_async, zone, tally.op, tally.args)
        except Exception as exc:
            tally.record(zone_name, False, exc)
        else:
            tally.record(zone_name, True, reply)

    async def _write(self, op: str, args: tuple[Any, ...]) -> Tally:
        tally = self._core.tally(op, args)
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not decided.done():
                decided.set_result(None)

        tally.on_decided = wake
        for zone in tally.zones:
            task = loop.create_task(self._zone_write(tally, zone))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if tally.result is None:
            try:
                async with asyncio.timeout(self._core.wait_timeout):
                    await decided
            except TimeoutError:
                pass  # finish() reports the zones still pending
        return tally

    async def get(self, key: str | bytes, default: Any = None) -> Any:
        """See :meth:`ReplicatedCache.get`."""
        value = await self._run(self._core.read_flow(self._core.key(key)))
        return default if value is MISS else value

    async def get_many(self, keys: Iterable[str | bytes]) -> dict[Any, Any]:
        """See :meth:`ReplicatedCache.get_many`."""
        encoded, users = self._keys(keys)
        if not encoded:
            return {}
        return self._by_user_key(await self._run(self._core.read_many_flow(encoded)), users)

    async def set(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.set`."""
        k = self._core.key(key)
        tally = await self._write("set", (k, self._core.encode(key, value), self._core.ttl(ttl)))
        return self._core.finish(tally, [k], {k: value})

    async def set_many(
        self, mapping: Mapping[str | bytes, Any], ttl: int | None = None
    ) -> WriteResult:
        """See :meth:`ReplicatedCache.set_many`."""
        items, values = self._items(mapping)
        tally = await self._write("set_many", (items, self._core.ttl(ttl)))
        return self._core.finish(tally, list(items), values)

    async def add(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.add`."""
        k = self._core.key(key)
        tally = await self._write("add", (k, self._core.encode(key, value), self._core.ttl(ttl)))
        return self._core.finish(tally, [k], None)

    async def delete(self, key: str | bytes) -> WriteResult:
        """See :meth:`ReplicatedCache.delete`."""
        k = self._core.key(key)
        return self._core.finish(await self._write("delete", (k,)), [k], {k: MISS})

    async def delete_many(self, keys: Iterable[str | bytes]) -> WriteResult:
        """See :meth:`ReplicatedCache.delete_many`."""
        encoded, _ = self._keys(keys)
        tally = await self._write("delete_many", (encoded,))
        return self._core.finish(tally, encoded, dict.fromkeys(encoded, MISS))

    async def touch(self, key: str | bytes, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.touch`."""
        k = self._core.key(key)
        return self._core.finish(await self._write("touch", (k, self._core.ttl(ttl))), [k], None)

    async def incr(self, key: str | bytes, delta: int = 1) -> int | None:
        """See :meth:`ReplicatedCache.incr`."""
        return await self._counter("incr", key, delta)

    async def decr(self, key: str | bytes, delta: int = 1) -> int | None:
        """See :meth:`ReplicatedCache.decr`."""
        return await self._counter("decr", key, delta)

    async def _counter(self, op: str, key: str | bytes, delta: int) -> int | None:
        args = self._core.counter_args(key, delta)
        result = self._core.finish(await self._write(op, args), [args[0]], None)
        return self._core.counter_value(result)

    def cached(
        self,
        key: Callable[..., str | bytes],
        ttl: int | None = None,
        *,
        loader_concurrency: int = DEFAULT_LOADER_CONCURRENCY,
        loader_timeout: float = DEFAULT_LOADER_TIMEOUT,
        pool: str = "realtime",
        fallback: Any = MISSING,
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate a coroutine loader; see :meth:`ReplicatedCache.cached` (loads run under
        the pool's semaphore of ``loader_concurrency`` and are cancelled at ``loader_timeout``)."""
        guard = self._loader(pool, loader_concurrency, loader_timeout, fallback)
        wait = loader_timeout * 2 + 1.0

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            @functools.wraps(fn)
            async def read_through(*args: P.args, **kwargs: P.kwargs) -> T:
                user_key = key(*args, **kwargs)
                value = await self.get(user_key, MISS)
                if value is not MISS:
                    return value  # type: ignore[no-any-return]
                return await self._load(user_key, ttl, guard, fn, args, kwargs, wait)  # type: ignore[no-any-return]

            return read_through

        return decorate

    async def _load(
        self,
        user_key: str | bytes,
        ttl: int | None,
        guard: Guard,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: float,
    ) -> Any:
        k = self._core.key(user_key)
        flight, leader = join(self._loads, self._loads_lock, k)
        if not leader:
            shared = await wait_async(self._loads_lock, flight, wait)
            if shared is not RETRY:
                return _unwrap(shared)
        value: Any = RETRY
        try:
            value = await guard.acall(fn, None, args, kwargs)
        except Exception as exc:
            value = Failed(exc)
            raise
        finally:
            # also on cancellation: waiters must not wait for a load that will never end
            if leader:
                finish(self._loads, self._loads_lock, k, flight, value, keep=False)
        if not isinstance(value, FromFallback):
            try:
                await self.set(user_key, value, ttl)
            except CacheError as exc:
                log.warning("cache %s: could not store loaded %r: %s", self.name, user_key, exc)
        return _unwrap(value)

    async def aclose(self) -> None:
        """Wait for background zone writes, then close every connection."""
        self._closed = True
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for zone in self._zones.values():
            for node in zone.nodes.values():
                await node.close()

    async def __aenter__(self) -> AsyncReplicatedCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
