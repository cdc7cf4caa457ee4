"""A zone call's decisions, whichever driver runs it: admission order, outcomes, settling.

Order of a call: wait for a zone permit (the client's own limit: past ``acquire_timeout`` the
zone is skipped uncounted), get a connection per server, *then* take the circuit ticket, so
neither the wait for a permit nor a connect is measured as the server's latency. A zone whose
circuit is not closed takes its ticket first (an open circuit refuses before any connect) and
uses only fresh connections: a half-open trial is never spent on a socket of the dead process.

The exchange has one deadline, ``timeout`` after the requests go out, for sending and for the
whole reply. Outcomes: a clean reply is a success; ``CLIENT_ERROR`` is the caller's error
(recorded as ignored, connection kept, raised as is); a timeout, reset or broken reply is the
zone's failure, and a connection-level error also drops every idle connection of that server.

The drivers (``_sync_call``, ``_async_call``) only wait, send and receive; what an outcome
means for the ticket, the pool and the permit is decided here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymemcache.exceptions import MemcacheClientError

from ..circuit import State, Ticket
from ._pool import AcquireTimeoutError
from ._zones import Exchange, Zone, first

__all__ = ["begin", "cancel", "connect_failed", "end_ticket", "is_fresh", "settle"]

_TRUSTED = (State.CLOSED, State.FORCED_CLOSED)


def is_fresh(zone: Zone[Any]) -> bool:
    """Whether a call should use new connections only (the circuit is not closed)."""
    return zone.dependency.state not in _TRUSTED


def begin(zone: Zone[Any]) -> Ticket:
    """The zone's circuit ticket, tracked until it ends (a forked child cancels the rest)."""
    ticket = zone.dependency.begin()
    zone.tickets.add(ticket)
    return ticket


def cancel(zone: Zone[Any], ticket: Ticket | None) -> None:
    """End ``ticket`` as never run, unless it has ended already (or was never taken)."""
    if ticket is not None and ticket in zone.tickets:
        zone.tickets.discard(ticket)
        ticket.cancel()


def connect_failed(
    zone: Zone[Any], ticket: Ticket | None, error: Exception, node: Any
) -> tuple[Ticket, BaseException]:
    """A connect to ``node`` failed: the zone's failure, recorded on a ticket taken now if the
    call had none yet; the ticket (ended) and what the caller should see."""
    if ticket is None:
        ticket = begin(zone)
    return ticket, end_ticket(zone, ticket, error, node)


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


def settle(
    zone: Zone[Any],
    ticket: Ticket,
    exchanges: list[Exchange],
    conns: list[Any],
    combine: Callable[[list[Any]], Any],
) -> tuple[bool, Any]:
    """Every reply is in: connections back to their pools, the permit returned, the ticket
    ended; ``(True, the zone's answer)`` or ``(False, the error the caller sees)``.

    A ``CLIENT_ERROR`` or ``SERVER_ERROR`` reply left its stream in step: the connection is
    kept and the first such error is the outcome.
    """
    error = None
    if len(exchanges) == 1:
        node, _, parser = exchanges[0]
        node.checkin(conns[0])
        error = parser.error
    else:
        for (node, _, parser), conn in zip(exchanges, conns, strict=True):
            node.checkin(conn)
            error = error or parser.error
    zone.gate.release()
    if error is not None:
        return False, end_ticket(zone, ticket, error)
    zone.tickets.discard(ticket)
    ticket.success()
    if combine is first:  # a one-key operation's one reply
        return True, exchanges[0][2].result[0]
    try:
        return True, combine([parser.result for _, _, parser in exchanges])
    except Exception as exc:  # a reply that parsed but makes no sense to the operation
        return False, exc
