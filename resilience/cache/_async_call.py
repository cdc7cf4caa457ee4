"""One zone call on an event loop, driven by callbacks: the same order and outcomes as
``_sync_call`` (permit, connections, then the ticket; one deadline; CLIENT_ERROR is the
caller's), without a task per call when a permit and idle connections are at hand.

``start_async(zone, op, args, done)`` calls ``done(ok, reply_or_error)`` exactly once; the
returned :class:`AsyncCall` can be aborted (its caller was cancelled): connections closed,
ticket cancelled, permit returned.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Callable
from typing import Any

from ..circuit import Ticket
from ._async_node import AsyncConn, AsyncNode
from ._sync_call import begin, end_ticket, is_fresh
from ._sync_node import AcquireTimeoutError
from ._zones import Exchange, Zone

__all__ = ["AsyncCall", "Deadlines", "start_async"]

Done = Callable[[bool, Any], None]


class AsyncCall:
    """A zone call in flight on one event loop."""

    __slots__ = (
        "_combine",
        "_conns",
        "_done",
        "_exchanges",
        "_finished",
        "_left",
        "_permit",
        "_task",
        "_ticket",
        "_timer",
        "zone",
    )

    def __init__(
        self,
        zone: Zone[AsyncNode],
        exchanges: list[Exchange],
        combine: Callable[[list[Any]], Any],
        done: Done,
    ) -> None:
        self.zone = zone
        self._exchanges = exchanges
        self._combine = combine
        self._done = done
        self._conns: list[AsyncConn] = []
        self._ticket: Ticket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._permit = False
        self._finished = False
        self._left = len(exchanges)

    @property
    def finished(self) -> bool:
        return self._finished

    # -- admission ----------------------------------------------------------------------

    def _start(self, acquire_timeout: float) -> None:
        zone = self.zone
        if zone.gate.try_acquire():
            self._permit = True
            if not is_fresh(zone):
                conns = []
                for node, _, _ in self._exchanges:
                    conn = node.take_idle()
                    if conn is None:
                        break
                    conns.append(conn)
                if len(conns) == len(self._exchanges):
                    self._conns = conns
                    try:
                        self._ticket = begin(zone)
                    except Exception as exc:
                        self._fail(exc)
                        return
                    self._launch()
                    return
                for (node, _, _), conn in zip(self._exchanges, conns, strict=False):
                    node.checkin(conn)
        self._task = asyncio.get_running_loop().create_task(self._admit(acquire_timeout))

    async def _admit(self, acquire_timeout: float) -> None:
        zone = self.zone
        loop = asyncio.get_running_loop()
        node = None
        try:
            if not self._permit:
                await zone.gate.acquire(acquire_timeout)
                self._permit = True
            wait_until = loop.time() + acquire_timeout
            fresh = is_fresh(zone)
            if fresh:
                self._ticket = begin(zone)
            try:
                for node, _, _ in self._exchanges:
                    self._conns.append(await node.checkout(fresh, wait_until))
            except AcquireTimeoutError:
                raise
            except Exception as exc:
                if self._ticket is None:
                    self._ticket = begin(zone)  # a failed connect is the zone's failure
                self._fail(exc, node)
                return
            if self._ticket is None:
                self._ticket = begin(zone)
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as exc:
            self._fail(exc)
            return
        self._task = None
        self._launch()

    # -- the exchange -------------------------------------------------------------------

    def _launch(self, faulted: bool = False) -> None:
        if self._finished:
            return
        if not faulted and self._ticket is not None and self._ticket.fault is not None:
            # a FIT fault wraps the exchange like a call: raise, delay or hang
            self._task = asyncio.get_running_loop().create_task(self._faulted())
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.zone.dependency.policy.timeout
        deadlines = self.zone.deadlines
        if deadlines is None:
            self._timer = loop.call_at(deadline, self._expire)
        else:
            self._timer = deadlines.add(loop, deadline, self)
        for i, ((_, payload, parser), conn) in enumerate(
            zip(self._exchanges, self._conns, strict=False)
        ):
            conn.request(payload, parser, functools.partial(self._part_done, i))

    async def _faulted(self) -> None:
        assert self._ticket is not None and self._ticket.fault is not None
        timeout = self.zone.dependency.policy.timeout
        try:
            await asyncio.wait_for(self._ticket.fault.wrap_async(_nothing, timeout)(), timeout)
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as exc:
            self._fail(exc)
            return
        self._task = None
        self._launch(faulted=True)

    def _part_done(self, i: int, error: BaseException | None) -> None:
        if self._finished:
            return
        if error is not None:
            self._fail(error, self._exchanges[i][0])
            return
        self._left -= 1
        if self._left == 0:
            self._complete()

    def _complete(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        zone, ticket = self.zone, self._ticket
        assert ticket is not None
        error = None
        for (node, _, parser), conn in zip(self._exchanges, self._conns, strict=False):
            node.checkin(conn)
            error = error or parser.error
        self._release()
        if error is not None:
            self._done(False, end_ticket(zone, ticket, error))
            return
        zone.tickets.discard(ticket)
        ticket.success()
        try:
            reply = self._combine([parser.result for _, _, parser in self._exchanges])
        except Exception as exc:  # a reply that parsed but makes no sense to the operation
            self._done(False, exc)
            return
        self._done(True, reply)

    def _expire(self) -> None:
        self._timer = None
        if not self._finished:
            self._fail(TimeoutError("memcached reply not complete by the deadline"))

    def _fail(self, error: BaseException, node: Any = None) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        for conn in self._conns:
            conn.abort()
        self._release()
        ticket = self._ticket
        if ticket is not None and ticket in self.zone.tickets:
            error = end_ticket(self.zone, ticket, error, node)
        self._done(False, error)

    def abort(self) -> None:
        """Give the call up (its caller was cancelled): nothing is recorded against the zone."""
        if self._finished:
            return
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for conn in self._conns:
            conn.abort()
        self._release()
        ticket = self._ticket
        if ticket is not None and ticket in self.zone.tickets:
            self.zone.tickets.discard(ticket)
            ticket.cancel()

    def _release(self) -> None:
        if self._permit:
            self._permit = False
            self.zone.gate.release()


async def _nothing() -> None:
    return None


class Deadlines:
    """When a zone's calls in flight expire: one loop timer at a time, for the earliest.

    A timer per call costs a heap entry, its cancellation and its removal on every call. Calls of
    a zone share one timeout, so their deadlines come in the order they start: a queue in that
    order and one timer at the head's deadline expire each call exactly on time. A call whose
    deadline would come before the last one's (the timeout was lowered meanwhile) gets a timer
    of its own; calls that finished leave the queue as the timer or new calls pass them.
    """

    __slots__ = ("_calls", "_last", "_loop", "_timer")

    def __init__(self) -> None:
        self._calls: collections.deque[tuple[float, AsyncCall]] = collections.deque()
        self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self, loop: asyncio.AbstractEventLoop, deadline: float, call: AsyncCall
    ) -> asyncio.TimerHandle | None:
        """Expire ``call`` at ``deadline``; a timer of its own when it is out of order."""
        if loop is not self._loop:  # a new loop: the old one's timer will never fire
            self.reset()
            self._loop = loop
        if deadline < self._last:
            return loop.call_at(deadline, call._expire)
        self._last = deadline
        calls = self._calls
        while calls and calls[0][1].finished:
            calls.popleft()
        calls.append((deadline, call))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire)
        return None

    def _fire(self) -> None:
        loop, calls = self._loop, self._calls
        assert loop is not None
        now = loop.time()
        expired = []
        while calls:
            deadline, call = calls[0]
            if not call.finished:
                if deadline > now:
                    break
                expired.append(call)
            calls.popleft()
        # the next timer first: an expired call's callback may start calls (add())
        self._timer = loop.call_at(calls[0][0], self._fire) if calls else None
        for call in expired:
            call._expire()

    def reset(self) -> None:
        """Forget every call (a forked child, or a new event loop)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._calls = collections.deque()
        self._last = 0.0
        self._loop = None


def start_async(
    zone: Zone[AsyncNode], op: str, args: tuple[Any, ...], done: Done, acquire_timeout: float
) -> AsyncCall:
    """Start one zone call; ``done(ok, reply_or_error)`` is called exactly once."""
    exchanges, combine = zone.plan(op, args)
    call = AsyncCall(zone, exchanges, combine, done)
    call._start(acquire_timeout)
    return call
