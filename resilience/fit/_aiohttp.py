"""aiohttp glue: the server middleware, tag propagation on client requests, the discovery route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from aiohttp import ClientSession, TraceConfig, TraceRequestStartParams, web

from ..circuit import registry
from ..context import request_scope
from ._runtime import _TAG, activate, enabled, scoped
from ._tags import HEADER

__all__ = [
    "DEPENDENCIES_PATH",
    "client_session",
    "dependencies_handler",
    "middleware",
    "outgoing_headers",
    "routes",
    "trace_config",
]

DEPENDENCIES_PATH = "/_resilience/fit/dependencies"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware() -> Any:
    """aiohttp middleware: a request scope per request, and the recipe of a valid tag in it.

    A request without a valid tag runs under no recipe at all, whatever the context the
    server's connection task inherited; a forged tag is counted and otherwise ignored.
    """

    @web.middleware
    async def fit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        async with request_scope():
            with scoped(activate(request.headers.get(HEADER))):
                return await handler(request)

    return fit_middleware


async def _on_request_start(
    session: ClientSession, ctx: SimpleNamespace, params: TraceRequestStartParams
) -> None:
    tag = _TAG.get()
    if tag is not None and HEADER not in params.headers:
        params.headers[HEADER] = tag


def trace_config() -> TraceConfig:
    """A trace config that copies the running request's verified tag onto outgoing requests.

    ``aiohttp.ClientSession(trace_configs=[resilience.fit.trace_config()])``; the hook runs in
    the task that makes the request, so it sees that request's scope.
    """
    config = TraceConfig()
    config.on_request_start.append(_on_request_start)
    return config


def client_session(**kwargs: Any) -> ClientSession:
    """An ``aiohttp.ClientSession`` whose requests carry the running request's FIT tag."""
    configs = list(kwargs.pop("trace_configs", None) or [])
    return ClientSession(trace_configs=[*configs, trace_config()], **kwargs)


def outgoing_headers() -> dict[str, str]:
    """The header to forward the running request's tag by hand (other HTTP clients)."""
    tag = _TAG.get()
    return {} if tag is None else {HEADER: tag}


async def dependencies_handler(request: web.Request) -> web.StreamResponse:
    """The service's dependency keys, for ``resilience fit discover``.

    Answers only when FIT is enabled and the request carries a valid tag: the list names
    internal systems, and only whoever holds the FIT secret needs it.
    """
    if not enabled():
        raise web.HTTPNotFound()
    # Under the middleware the tag was verified (and counted) already.
    verified = _TAG.get() is not None or activate(request.headers.get(HEADER)) is not None
    if not verified:
        raise web.HTTPForbidden(text="a valid FIT tag is required")
    return web.json_response({"dependencies": registry().names()})


def routes(path: str = DEPENDENCIES_PATH) -> list[web.RouteDef]:
    """Routes to add to an app: ``app.add_routes(resilience.fit.routes())``."""
    return [web.get(path, dependencies_handler)]
