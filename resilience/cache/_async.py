"""The asyncio driver: the same core, driven by callbacks; gets are batched per loop turn."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..circuit import State
from ..context import current_scope
from ._async_call import AsyncCall, Deadlines, start_async
from ._async_node import AsyncNode
from ._base import CacheBase
from ._batch import Batcher
from ._flight import wait_async
from ._gate import AsyncGate
from ._readthrough import AsyncReadThrough
from ._steps import CALL, MISS, WAIT, WRITE, Flow
from ._writes import Tally, WriteResult
from ._zones import Zone

__all__ = ["AsyncReplicatedCache"]

T = TypeVar("T")


def _record(tally: Tally, zone: str, ok: bool, reply: Any) -> None:
    tally.record(zone, ok, reply)


_CLOSED = (State.CLOSED, State.FORCED_CLOSED)


class AsyncReplicatedCache(CacheBase[AsyncNode], AsyncReadThrough):
    """The asyncio twin of :class:`ReplicatedCache`: the same options, methods as coroutines.

    Gets issued in the same event-loop turn (or within ``batch_window`` seconds) share one
    multi-get per server; per-request dedup and single flight work as for single gets.
    Connections belong to the event loop that opened them: use one instance per loop.
    ``write_workers`` is unused (zone writes complete on the loop).
    """

    _node_class = AsyncNode
    _gate_class = AsyncGate

    def _setup(self) -> None:
        for zone in self._zones.values():
            zone.deadlines = Deadlines()
        self._calls: set[AsyncCall] = set()
        self._idle: asyncio.Event | None = None
        window = self.config.batch_window
        self._batchers: dict[str, Batcher] | None = None
        if window is not None:
            self._batchers = {
                name: Batcher(zone, window, self.config.max_batch, self._start, self.stats)
                for name, zone in self._zones.items()
            }

    # -- driving the core -------------------------------------------------------------------

    def _start(
        self,
        zone: Zone[AsyncNode],
        op: str,
        args: tuple[Any, ...],
        done: Callable[[bool, Any], None],
    ) -> AsyncCall:
        """Start a zone call; ``done(ok, reply)`` once. Tracks it for ``aclose``."""
        calls = self._calls
        holder: list[AsyncCall] = []

        def finished(ok: bool, reply: Any) -> None:
            if holder:
                calls.discard(holder[0])
                if not calls and self._idle is not None:
                    self._idle.set()
            if ok and zone.catch_up.missed:
                self._catch_up(zone)
            done(ok, reply)

        call = start_async(zone, op, args, finished, self.config.acquire_timeout)
        if not call.finished:
            holder.append(call)
            calls.add(call)
        return call

    async def _call(self, name: str, op: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        zone = self._zones[name]
        batchers = self._batchers
        if op == "get" and batchers is not None:
            return await batchers[name].get(args[0])
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()

        def done(ok: bool, reply: Any) -> None:
            if not future.done():
                future.set_result((ok, reply))

        call = self._start(zone, op, args, done)
        try:
            return await future
        except asyncio.CancelledError:
            call.abort()
            self._calls.discard(call)
            raise

    async def _run(self, flow: Flow[T]) -> T:
        """Run a flow of the core to its answer: do each step it asks for (see ``_steps``)."""
        try:
            step = next(flow)
            while True:
                kind = step[0]
                if kind == CALL:
                    outcome: Any = await self._call(step[1], step[2], step[3])
                elif kind == WRITE:
                    outcome = await self._write(step[1], step[2], step[3], step[4])
                elif kind == WAIT:
                    outcome = await wait_async(step[2], step[1], step[3])
                else:
                    outcome = await self._run_loader(step[1], step[2], step[3], step[4])
                step = flow.send(outcome)
        except StopIteration as stop:
            answer: T = stop.value
            return answer
        finally:
            flow.close()

    def _catch_up(self, zone: Zone[AsyncNode]) -> None:
        """The zone answered: if it is closed again, delete what it missed."""
        if zone.dependency.state not in _CLOSED or self._closed:
            return
        taken = zone.catch_up.take()
        if not taken:
            return

        def done(ok: bool, reply: Any) -> None:
            zone.catch_up.done(taken, ok)
            if ok and zone.catch_up.missed:
                self._catch_up(zone)

        self._start(zone, "delete_many", ([k for k, _ in taken],), done)

    async def _write(
        self,
        op: str,
        args: tuple[Any, ...],
        zones: Iterable[str] | None = None,
        tally: Tally | None = None,
    ) -> Tally:
        """Send one write to ``zones`` (default: every zone) at once; return when decided.

        Zones still to answer then finish on the loop and are still counted.
        """
        if tally is None:
            tally = self._core.tally(op, args)
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not decided.done():
                decided.set_result(None)

        tally.on_decided = wake
        for name in tally.zones if zones is None else zones:
            zone = self._zones[name]
            self._start(zone, op, args, functools.partial(_record, tally, name))
        if not tally.decided:
            try:
                async with asyncio.timeout(self._core.wait_timeout):
                    await decided
            except TimeoutError:
                pass  # finish() reports the zones still pending
        return tally

    # -- reads ----------------------------------------------------------------------------

    async def get(self, key: str | bytes, default: Any = None) -> Any:
        """See :meth:`ReplicatedCache.get`."""
        core = self._core
        k = core.key(key)
        local = core.local
        if current_scope() is not None or k in core.catch_up[local]:
            value = await self._run(core.read_flow(k))
            return default if value is MISS else value
        # the common case without a flow: ask the local zone; only a miss, a failure or an
        # undecodable value goes on to the other zones (the flow, told what it answered)
        batchers = self._batchers
        if batchers is not None:  # straight to the batch: no coroutine frame of _call's
            outcome = await batchers[local].get(k)
        else:
            outcome = await self._call(local, "get", (k,))
        value = core.local_hit(k, outcome)
        if value is MISS:
            value, _ = await self._run(core.get_flow(k, outcome))
        return default if value is MISS else value

    async def get_many(self, keys: Iterable[str | bytes]) -> dict[Any, Any]:
        """See :meth:`ReplicatedCache.get_many`."""
        return await self._run(self._core.read_many(keys))

    async def gets(self, key: str | bytes, default: Any = None) -> tuple[Any, int | None]:
        """See :meth:`ReplicatedCache.gets`."""
        return await self._run(self._core.gets_flow(key, default))

    # -- writes ---------------------------------------------------------------------------

    async def set(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.set`."""
        return await self._run(self._core.set_flow(key, value, ttl))

    async def set_many(
        self, mapping: Mapping[str | bytes, Any], ttl: int | None = None
    ) -> WriteResult:
        """See :meth:`ReplicatedCache.set_many`."""
        return await self._run(self._core.set_many_flow(mapping, ttl))

    async def add(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.add`."""
        return await self._run(self._core.store_flow("add", key, value, ttl))

    async def replace(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.replace`."""
        return await self._run(self._core.store_flow("replace", key, value, ttl))

    async def append(self, key: str | bytes, data: str | bytes) -> WriteResult:
        """See :meth:`ReplicatedCache.append`."""
        return await self._run(self._core.concat_flow("append", key, data))

    async def prepend(self, key: str | bytes, data: str | bytes) -> WriteResult:
        """See :meth:`ReplicatedCache.prepend`."""
        return await self._run(self._core.concat_flow("prepend", key, data))

    async def cas(
        self, key: str | bytes, value: Any, cas_token: int, ttl: int | None = None
    ) -> bool | None:
        """See :meth:`ReplicatedCache.cas`."""
        return await self._run(self._core.cas_flow(key, value, cas_token, ttl))

    async def delete(self, key: str | bytes) -> WriteResult:
        """See :meth:`ReplicatedCache.delete`."""
        return await self._run(self._core.delete_flow(key))

    async def delete_many(self, keys: Iterable[str | bytes]) -> WriteResult:
        """See :meth:`ReplicatedCache.delete_many`."""
        return await self._run(self._core.delete_many_flow(keys))

    async def touch(self, key: str | bytes, ttl: int | None = None) -> WriteResult:
        """See :meth:`ReplicatedCache.touch`."""
        return await self._run(self._core.touch_flow(key, ttl))

    async def incr(self, key: str | bytes, delta: int = 1) -> int | None:
        """See :meth:`ReplicatedCache.incr`."""
        return await self._run(self._core.counter_flow("incr", key, delta))

    async def decr(self, key: str | bytes, delta: int = 1) -> int | None:
        """See :meth:`ReplicatedCache.decr`."""
        return await self._run(self._core.counter_flow("decr", key, delta))

    async def flush_all(self, *, zones: Iterable[str], delay: int = 0) -> WriteResult:
        """See :meth:`ReplicatedCache.flush_all`."""
        return await self._run(self._core.flush_flow(zones, delay))

    # -- lifecycle ------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Wait until no zone call is in flight (writes finishing after their caller returned,
        catch-up deletes)."""
        while self._calls:
            self._idle = asyncio.Event()
            await self._idle.wait()

    async def aclose(self) -> None:
        """Wait for zone calls in flight (bounded by their deadlines), then close connections."""
        self._mark_closed()
        await self.wait_idle()
        for zone in self._zones.values():
            for node in zone.nodes.values():
                await node.close()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._calls = set()
        self._idle = None
        for zone in self._zones.values():
            zone.deadlines = Deadlines()  # the parent's loop and calls are not this process's
        for batcher in (self._batchers or {}).values():
            batcher.after_fork()

    async def __aenter__(self) -> AsyncReplicatedCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
