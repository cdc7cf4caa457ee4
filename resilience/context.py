"""Request scope on contextvars: a per-request memo and the active FIT context.

``request_scope()`` works as ``with`` in threaded code and ``async with`` in asyncio code. Inside
it, :func:`current_scope` returns the scope; outside, ``None``, and nothing is remembered.
Protected sync calls run in a copy of the caller's context, so a scope (and an active FIT recipe)
follows a call into the dependency's worker thread; asyncio tasks inherit it as usual.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

__all__ = [
    "FIT",
    "Fault",
    "FaultContext",
    "RequestScope",
    "current_fit",
    "current_scope",
    "request_scope",
]


class Fault(Protocol):
    """A fault chosen for one call. It wraps the function so the failure happens *inside* the
    protected call: the bulkhead, timeout and fallback see it as a real failure, and the
    experiment's own breaker judges it (never the dependency's: ``resilience.circuit._shadow``)."""

    def wrap_sync(self, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
        """A function that fails as the fault says (raise, sleep, or hang past ``timeout``)."""

    def wrap_async(
        self, fn: Callable[..., Awaitable[Any]], timeout: float
    ) -> Callable[..., Awaitable[Any]]:
        """The coroutine-function counterpart of ``wrap_sync``."""


class FaultContext(Protocol):
    """What an injection point asks of an active FIT context (see ``resilience.fit``).

    Every ``protect`` call (and so every cache zone operation, whose zones are dependencies
    named ``cache.<cache>.<zone>``) reads the ``FIT`` contextvar once; when it holds a context,
    the call is a tagged one: it asks ``fault_for(dependency_name)`` (the one call an injection
    point makes to choose a fault) and, given a fault, runs ``fault.wrap_sync(fn, timeout)`` (or
    ``wrap_async``) instead of ``fn``. The fault counts itself as applied only when the wrapped
    function runs, so a call rejected before it runs injected nothing.

    ``recipe_name`` and ``bulkhead_share`` are what the circuit needs to keep an experiment
    apart from real traffic: the key of the shadow breaker per (dependency, recipe) and the
    ``recipe`` label of ``resilience_fit_calls_total``, and the share of the dependency's
    bulkhead tagged calls may hold (at least one permit).
    """

    @property
    def recipe_name(self) -> str:
        """The name of the recipe the request runs under."""

    @property
    def bulkhead_share(self) -> float:
        """The fraction (0, 1] of a dependency's bulkhead that tagged calls may hold."""

    def fault_for(self, dependency: str) -> Fault | None:
        """The fault to inject into a call to ``dependency``, or ``None``."""


_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "resilience_scope", default=None
)
# Read on every protected call: it must stay a single contextvar lookup.
FIT: contextvars.ContextVar[FaultContext | None] = contextvars.ContextVar(
    "resilience_fit", default=None
)


class RequestScope:
    """State kept for one request: a memo of values keyed by the component that stored them.

    ``memo`` is a plain dict shared by every thread and task of the request; ``lock`` guards
    compound updates to it (single-flight bookkeeping). ``attrs`` carries request attributes
    (for flag targeting, logging) that the caller chooses to put there.
    """

    __slots__ = ("_token", "attrs", "lock", "memo")

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        self.memo: dict[Any, Any] = {}
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.lock = threading.Lock()
        self._token: contextvars.Token[RequestScope | None] | None = None

    def __enter__(self) -> RequestScope:
        if self._token is not None:
            raise RuntimeError("a RequestScope cannot be entered twice")
        self._token = _SCOPE.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            _SCOPE.reset(token)
        self.memo.clear()

    async def __aenter__(self) -> RequestScope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def request_scope(attrs: dict[str, Any] | None = None) -> RequestScope:
    """A new request scope; enter it with ``with`` or ``async with``."""
    return RequestScope(attrs)


def current_scope() -> RequestScope | None:
    """The request scope of the running code, or ``None`` outside any scope."""
    return _SCOPE.get()


def current_fit() -> FaultContext | None:
    """The FIT context active for the running code, or ``None``."""
    return FIT.get()
