"""The one core every framework integration adapts (``resilience.integrations.*``).

As OpenTelemetry's propagators do, the logic lives here once and the integrations only read and
write headers or metadata through a getter or a setter over their own carrier (an ASGI scope,
a WSGI environ, an aiohttp request, gRPC metadata, an httpx or requests request):

- server side, :class:`ServerRequest` verifies the incoming tag (``max_active`` included),
  opens the request scope, activates the recipe for the request's whole life, and gives the
  acknowledgement header for the response;
- client side, :func:`inject` writes the running request's tag onto an outgoing request when
  ``propagate_to`` allows its host, and :func:`absorb_ack` merges a downstream service's
  acknowledgement into the running request's record;
- :func:`dependency_listing` answers the route ``resilience fit discover`` reads.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from ..circuit import registry
from ..context import FIT, RequestScope
from . import _runtime
from ._ack import ACK_HEADER, decode_ack, encode_ack
from ._faults import ActiveRecipe
from ._hosts import HostPolicy
from ._tags import HEADER

__all__ = [
    "DEPENDENCIES_PATH",
    "ServerRequest",
    "absorb_ack",
    "dependency_listing",
    "extract",
    "inject",
    "outgoing_headers",
    "propagates_to",
    "server_request",
]

DEPENDENCIES_PATH = "/_resilience/fit/dependencies"

C = TypeVar("C")
Getter = Callable[[C, str], "str | None"]
Setter = Callable[[C, str, str], None]

_DEFAULT_POLICY = HostPolicy()


def extract(carrier: C, get: Getter[C]) -> str | None:
    """The FIT tag an incoming carrier holds (``get`` looks a header up case-insensitively)."""
    return get(carrier, HEADER)


class ServerRequest:
    """One incoming request under the library: its scope and, if its tag verified, its recipe.

    Enter it before the application runs and leave it when the response is complete (for a
    streamed response, when the body has been sent). Entering verifies the tag, counts it and
    takes a ``max_active`` slot; leaving gives the slot back and ends the scope, whatever ended
    the request.
    """

    __slots__ = ("_fit_token", "_scope", "_tag", "_tag_token", "context")

    def __init__(self, tag: str | None) -> None:
        self._tag = tag
        self.context: ActiveRecipe | None = None
        self._scope: RequestScope | None = None
        self._fit_token: Any = None
        self._tag_token: Any = None

    def __enter__(self) -> ServerRequest:
        context = self.context = None if self._tag is None else _runtime.admit(self._tag)
        scope = self._scope = RequestScope()
        scope.__enter__()
        # A request without a valid tag runs under no recipe at all, whatever context the
        # server's connection task or thread inherited; both are None already on the common
        # path, where reading is cheaper than setting and resetting.
        if context is not None or FIT.get() is not None or _runtime._TAG.get() is not None:
            self._fit_token = FIT.set(context)
            self._tag_token = _runtime._TAG.set(context.tag if context is not None else None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        try:
            if self._tag_token is not None:
                _runtime._TAG.reset(self._tag_token)
                FIT.reset(self._fit_token)
            if self._scope is not None:
                self._scope.__exit__(exc_type, exc, tb)
        finally:
            self._tag_token = self._fit_token = self._scope = None
            _runtime.release(self.context)

    async def __aenter__(self) -> ServerRequest:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def ack(self) -> str | None:
        """The acknowledgement header's value, or None when the request runs untagged."""
        context = self.context
        if context is None:
            return None
        return encode_ack(context.recipe_name, context.record())

    def acknowledge(self, carrier: C, set: Setter[C]) -> None:
        """Write the acknowledgement onto the response's headers (nothing when untagged)."""
        value = self.ack()
        if value is not None:
            set(carrier, ACK_HEADER, value)


def server_request(tag: str | None) -> ServerRequest:
    """A :class:`ServerRequest` for an incoming request carrying ``tag`` (or None)."""
    return ServerRequest(tag)


def _policy() -> HostPolicy:
    config = _runtime.config()
    return config.propagate_to if config is not None else _DEFAULT_POLICY


def propagates_to(url: str | None) -> bool:
    """Whether ``propagate_to`` lets a tag travel to this URL or host."""
    return _policy().allows(url)


def inject(carrier: C, set: Setter[C], url: str | None) -> bool:
    """Write the running request's tag onto an outgoing request to ``url`` (a URL or host).

    Only when the running request has a verified tag and ``propagate_to`` allows the host; a
    tag is a bearer credential until it expires, so third parties never receive it. Returns
    whether the tag was written.
    """
    tag = _runtime._TAG.get()
    if tag is None or not _policy().allows(url):
        return False
    set(carrier, HEADER, tag)
    return True


def outgoing_headers(url: str | None) -> dict[str, str]:
    """The header that forwards the running request's tag to ``url``, for other clients."""
    headers: dict[str, str] = {}
    inject(headers, dict.__setitem__, url)
    return headers


def absorb_ack(value: str | None, context: object | None = None) -> None:
    """Merge a downstream response's acknowledgement into the running request's record.

    Args:
        value: the ``X-Resilience-FIT-Ack`` header of the response (None: nothing to merge).
        context: the request's context when the caller is outside it (a gRPC done callback);
            by default the running request's.
    """
    if value is None:
        return
    target = FIT.get() if context is None else context
    if not isinstance(target, ActiveRecipe):
        return
    ack = decode_ack(value)
    if ack is not None and ack.recipe == target.recipe_name:
        target.merge(ack.record)


def dependency_listing(tag: str | None) -> tuple[int, dict[str, Any]] | None:
    """The dependency route's answer: (status, JSON body), or None while FIT is off.

    The list names internal systems, so it answers only a request with a valid tag (403
    otherwise); with FIT off the route does not exist and the application answers instead.
    """
    if not _runtime.enabled():
        return None
    verified = _runtime._TAG.get() is not None or _runtime.activate(tag) is not None
    if not verified:
        return 403, {"error": "a valid FIT tag is required"}
    return 200, {"dependencies": registry().names()}
