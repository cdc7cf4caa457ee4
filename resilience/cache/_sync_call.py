"""One zone call on the caller's thread: admitted, sent, then read, its ticket always ended.

Order of a call: wait for a zone permit (the client's own limit: past ``acquire_timeout`` the
zone is skipped uncounted), get a connection per server, *then* take the circuit ticket, so
neither the wait for a permit nor a connect is measured as the server's latency. A zone whose
circuit is not closed takes its ticket first (an open circuit refuses before any connect) and
uses only fresh connections: a half-open trial is never spent on a socket of the dead process.

The exchange has one deadline, ``timeout`` after the ticket, for sending and for the whole
reply. Outcomes: a clean reply is a success; ``CLIENT_ERROR`` is the caller's error (recorded as
ignored, connection kept, raised as is); a timeout, reset or broken reply is the zone's failure,
and a connection-level error also drops every idle connection of that server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymemcache.exceptions import MemcacheClientError

from ..circuit import State, Ticket
from ._sync_node import AcquireTimeoutError, SyncConn, SyncNode
from ._zones import Zone

__all__ = ["SyncCall", "end_ticket", "is_fresh", "start_sync"]

_now = time.monotonic
_TRUSTED = (State.CLOSED, State.FORCED_CLOSED)


def is_fresh(zone: Zone[Any]) -> bool:
    """Whether a call should use new connections only (the circuit is not closed)."""
    return zone.dependency.state not in _TRUSTED


def end_ticket(
    zone: Zone[Any], ticket: Ticket, error: BaseException, node: Any = None
) -> BaseException:
    """End ``ticket`` by ``error``; returns what the caller should see.

    A connection-level error on ``node`` also drops that server's idle connections: one dead
    socket means the others to it likely are too (the server restarted).
    """
    zone.tickets.discard(ticket)
    if isinstance(error, AcquireTimeoutError):  # the client's own limit: nothing happened
        ticket.cancel()
        return error
    if isinstance(error, MemcacheClientError):
        ticket.failure(error, ignore=(MemcacheClientError,))
        client: BaseException = error
        return client
    if isinstance(error, TimeoutError):
        timeout = ticket.timeout()
        timeout.__cause__ = error
        return timeout
    if isinstance(error, Exception):
        ticket.failure(error)
        if isinstance(error, OSError) and node is not None:
            node.drop_idle()
        return error
    ticket.cancel()
    return error


def begin(zone: Zone[Any]) -> Ticket:
    ticket = zone.dependency.begin()
    zone.tickets.add(ticket)
    return ticket


class SyncCall:
    """A zone call whose requests are sent: ``receive`` reads, combines, ends the ticket."""

    __slots__ = ("_combine", "_conns", "_deadline", "_parts", "ticket", "zone")

    def __init__(
        self,
        zone: Zone[SyncNode],
        ticket: Ticket,
        parts: list[tuple[SyncNode, SyncConn, Any]],
        combine: Callable[[list[Any]], Any],
        deadline: float,
    ) -> None:
        self.zone = zone
        self.ticket = ticket
        self._parts = parts
        self._combine = combine
        self._deadline = deadline

    def ready(self) -> bool:
        """Whether every server's reply has started to arrive (reading will not wait long)."""
        return all(conn.ready() for _, conn, _ in self._parts)

    def receive(self) -> Any:
        """The zone's answer; raises the zone's failure (ticket ended either way)."""
        parts, zone = self._parts, self.zone
        done = 0
        try:
            for _, conn, parser in parts:
                conn.receive(parser, self._deadline)
                done += 1
        except BaseException as exc:
            for _, conn, _ in parts:
                conn.close()
            zone.gate.release()
            failed = parts[done][0] if done < len(parts) else None
            raise end_ticket(zone, self.ticket, exc, failed) from None
        error = None
        for node, conn, parser in parts:
            node.checkin(conn)
            error = error or parser.error
        zone.gate.release()
        if error is not None:
            raise end_ticket(zone, self.ticket, error)
        zone.tickets.discard(self.ticket)
        self.ticket.success()
        return self._combine([parser.result for _, _, parser in parts])

    def abandon(self) -> None:
        """Drop the replies unread: connections closed, ticket cancelled, permit returned."""
        for _, conn, _ in self._parts:
            conn.close()
        self.zone.gate.release()
        self.zone.tickets.discard(self.ticket)
        self.ticket.cancel()


def start_sync(
    zone: Zone[SyncNode], op: str, args: tuple[Any, ...], acquire_timeout: float
) -> SyncCall:
    """Admit one zone call and send its requests.

    Raises ``AcquireTimeoutError`` (no permit or connection in time: not the zone's fault),
    ``CircuitOpenError`` / ``BulkheadFullError`` (refused), or the zone's failure.
    """
    exchanges, combine = zone.plan(op, args)
    zone.gate.acquire(acquire_timeout)
    conns: list[SyncConn] = []
    ticket: Ticket | None = None
    try:
        wait_until = _now() + acquire_timeout
        fresh = is_fresh(zone)
        if fresh:
            ticket = begin(zone)
        node = None
        try:
            for node, _, _ in exchanges:
                conns.append(node.checkout(fresh, wait_until))
        except AcquireTimeoutError:
            if ticket is not None:
                zone.tickets.discard(ticket)
                ticket.cancel()
            raise
        except Exception as exc:
            if ticket is None:
                ticket = begin(zone)  # a failed connect is the zone's failure: record it
            raise end_ticket(zone, ticket, exc, node) from None
        if ticket is None:
            ticket = begin(zone)
        timeout = zone.dependency.policy.timeout
        deadline = _now() + timeout
        parts = [
            (node, conn, parser) for (node, _, parser), conn in zip(exchanges, conns, strict=False)
        ]
        try:
            if ticket.fault is None:
                for conn, (_, payload, _) in zip(conns, exchanges, strict=False):
                    conn.send(payload, deadline)
            else:
                began = _now()
                ticket.fault.wrap_sync(_send_all, timeout)(conns, exchanges, deadline)
                if _now() - began > timeout:
                    raise TimeoutError("injected delay past the timeout")
        except BaseException as exc:
            raise end_ticket(zone, ticket, exc, node) from None
        return SyncCall(zone, ticket, parts, combine, deadline)
    except BaseException:
        for conn in conns:
            conn.close()
        if ticket is not None and ticket in zone.tickets:  # interrupted before it was ended
            zone.tickets.discard(ticket)
            ticket.cancel()
        zone.gate.release()
        raise


def _send_all(conns: list[SyncConn], exchanges: list[Any], deadline: float) -> None:
    for conn, (_, payload, _) in zip(conns, exchanges, strict=False):
        conn.send(payload, deadline)
