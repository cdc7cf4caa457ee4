"""What the blocking and the asyncio node decide alike about a server's connections.

A connection carries the generation of its node when it was opened. A connection-level error
(a restarted server leaves every socket to it dead) starts a new generation and closes the idle
connections; one that was out is closed when it comes back instead of rejoining the pool.
At most ``connect_limit`` connections are being opened at once, so a burst of callers does not
stampede a server; a caller that cannot get one by its deadline gets ``AcquireTimeoutError``.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ..errors import CacheError

__all__ = ["CONNECT_LIMIT", "AcquireTimeoutError", "Pool"]

CONNECT_LIMIT = 4  # connections opened at once per server


class _Conn(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Conn)


class AcquireTimeoutError(CacheError, TimeoutError):
    """The call waited its whole ``acquire_timeout`` for a zone permit or a connection.

    The client limited itself: this is never counted against the zone's circuit.
    """


class Pool(Generic[C]):
    """A memcached server's idle connections and connects under way (the node's base)."""

    def __init__(
        self,
        address: tuple[str, int],
        timeout: float,
        max_idle: int,
        connect_limit: int = CONNECT_LIMIT,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.max_idle = max_idle
        self.connect_limit = connect_limit
        self._idle: list[C] = []  # list.pop()/append() are atomic
        self._gen = 0
        self._connecting = 0
        self._new_waiters()

    def _new_waiters(self) -> None:
        """Start with no caller waiting for a connection (again after a fork)."""
        raise NotImplementedError

    def drop_idle(self) -> None:
        """Close every idle connection; connections out now are closed when given back."""
        self._gen += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _no_connection(self) -> AcquireTimeoutError:
        host, port = self.address
        return AcquireTimeoutError(f"memcached {host}:{port}: no connection free")

    def after_fork(self) -> None:
        """In a forked child: a new generation, nothing idle, no connect under way and nobody
        waiting (the parent's threads and tasks are not here)."""
        self._gen += 1
        idle, self._idle = self._idle, []
        self._connecting = 0
        self._new_waiters()
        self._forget(idle)

    def _forget(self, idle: list[C]) -> None:
        """What to do with the parent's idle connections (their sockets are shared with it)."""
        raise NotImplementedError
