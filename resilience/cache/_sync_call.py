"""One zone call on the caller's thread: admitted, sent, then read, its ticket always ended.

The order of a call and what its outcomes mean are in ``_call``. A replicated write admits
every zone first and then sends to all of them back to back (``admit``, then ``send``): the
requests leave together, and no bookkeeping runs between two sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..circuit import Ticket
from ._call import begin, cancel, connect_failed, end_ticket, is_fresh, settle
from ._pool import AcquireTimeoutError
from ._sync_node import SyncConn, SyncNode
from ._zones import Exchange, Zone

__all__ = ["SyncCall", "admit", "start_sync"]

_now = time.monotonic


class SyncCall:
    """A zone call holding its permit, connections and ticket: ``send``, then ``receive``."""

    __slots__ = ("_combine", "_conns", "_deadline", "_done", "_exchanges", "ticket", "zone")

    def __init__(
        self,
        zone: Zone[SyncNode],
        ticket: Ticket,
        exchanges: list[Exchange],
        conns: list[SyncConn],
        combine: Callable[[list[Any]], Any],
    ) -> None:
        self.zone = zone
        self.ticket = ticket
        self._exchanges = exchanges
        self._conns = conns
        self._combine = combine
        self._deadline = 0.0
        self._done = 0  # exchanges sent (while sending) or read (while receiving)

    def send(self) -> None:
        """Send every request; the exchange's one deadline starts now. Raises the zone's
        failure (ticket ended, connections closed, permit returned)."""
        ticket, exchanges = self.ticket, self._exchanges
        timeout = self.zone.dependency.policy.timeout
        self._deadline = deadline = _now() + timeout
        try:
            if ticket.fault is None:
                if len(exchanges) == 1:
                    self._conns[0].send(exchanges[0][1], deadline)
                else:
                    self._send_all(deadline)
            else:  # a FIT fault wraps the exchange like a call: raise, delay or hang
                began = _now()
                ticket.fault.wrap_sync(self._send_all, timeout)(deadline)
                if _now() - began > timeout:
                    raise TimeoutError("injected delay past the timeout")
        except BaseException as exc:
            self._close()
            raise end_ticket(self.zone, ticket, exc, exchanges[self._done][0]) from None

    def _send_all(self, deadline: float) -> None:
        for conn, (_, payload, _) in zip(self._conns, self._exchanges, strict=True):
            conn.send(payload, deadline)
            self._done += 1
        self._done = 0

    def ready(self) -> bool:
        """Whether every server's reply has started to arrive (reading will not wait long)."""
        return all(conn.ready() for conn in self._conns)

    def receive(self) -> tuple[bool, Any]:
        """``(True, the zone's answer)`` or ``(False, the zone's failure)``, ticket ended either
        way (an interruption ends it too, and passes through)."""
        exchanges, conns, deadline = self._exchanges, self._conns, self._deadline
        try:
            if len(conns) == 1:
                conns[0].receive(exchanges[0][2], deadline)
            else:
                for conn, (_, _, parser) in zip(conns, exchanges, strict=True):
                    conn.receive(parser, deadline)
                    self._done += 1
        except Exception as exc:
            self._close()
            return False, end_ticket(self.zone, self.ticket, exc, exchanges[self._done][0])
        except BaseException:
            self.abandon()
            raise
        return settle(self.zone, self.ticket, exchanges, conns, self._combine)

    def abandon(self) -> None:
        """Drop the replies unread: connections closed, ticket cancelled, permit returned."""
        self._close()
        cancel(self.zone, self.ticket)

    def _close(self) -> None:
        for conn in self._conns:
            conn.close()
        self.zone.gate.release()


def admit(
    zone: Zone[SyncNode],
    exchanges: list[Exchange],
    combine: Callable[[list[Any]], Any],
    acquire_timeout: float,
) -> SyncCall:
    """A zone permit, a connection per server, then the ticket; nothing sent yet.

    Raises ``AcquireTimeoutError`` (no permit or connection in time: not the zone's fault),
    ``CircuitOpenError`` / ``BulkheadFullError`` (refused), or the zone's failure (a connect).
    """
    gate = zone.gate
    gate.acquire(acquire_timeout)
    conns: list[SyncConn] = []
    ticket: Ticket | None = None
    node = None
    try:
        fresh = is_fresh(zone)
        if fresh:
            ticket = begin(zone)
        wait_until = _now() + acquire_timeout
        try:
            for node, _, _ in exchanges:
                conns.append(node.checkout(fresh, wait_until))
        except AcquireTimeoutError:
            raise
        except Exception as exc:
            ticket, error = connect_failed(zone, ticket, exc, node)
            raise error from None
        if ticket is None:
            ticket = begin(zone)
    except BaseException:
        for conn in conns:
            conn.close()
        cancel(zone, ticket)  # interrupted before it was ended
        gate.release()
        raise
    return SyncCall(zone, ticket, exchanges, conns, combine)


def start_sync(
    zone: Zone[SyncNode], op: str, args: tuple[Any, ...], acquire_timeout: float
) -> SyncCall:
    """Admit one zone call and send its requests (see :func:`admit`)."""
    call = admit(zone, *zone.plan(op, args), acquire_timeout)
    call.send()
    return call
