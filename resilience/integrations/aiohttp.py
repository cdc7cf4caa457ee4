"""aiohttp glue: the server middleware, tag propagation on client requests, the dependency route.

```python
from resilience.integrations import aiohttp as fit_aiohttp

app = web.Application(middlewares=[fit_aiohttp.middleware()])
app.add_routes(fit_aiohttp.routes())             # the dependency list `fit discover` reads
session = fit_aiohttp.client_session()           # forwards the tag, merges acknowledgements
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from aiohttp import (
    ClientSession,
    TraceConfig,
    TraceRequestEndParams,
    TraceRequestRedirectParams,
    TraceRequestStartParams,
    web,
)
from multidict import istr
from yarl import URL

from ..fit import (
    ACK_HEADER,
    DEPENDENCIES_PATH,
    HEADER,
    absorb_ack,
    dependency_listing,
    inject,
    propagates_to,
    server_request,
)

__all__ = [
    "DEPENDENCIES_PATH",
    "client_session",
    "dependencies_handler",
    "middleware",
    "routes",
    "trace_config",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HEADER = istr(HEADER)  # looked up on every request: spare the case folding


def _set(headers: Any, name: str, value: str) -> None:
    headers[name] = value


def middleware() -> Any:
    """aiohttp middleware: a request scope per request, and the recipe of a valid tag in it.

    A request without a valid tag runs under no recipe at all, whatever the context the
    server's connection task inherited; a forged tag is counted and otherwise ignored. A tagged
    response carries the acknowledgement header, unless the handler streamed it (prepared it)
    itself before returning.
    """

    @web.middleware
    async def fit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # A plain ``with``: entering and leaving never wait, and the untagged path is the hot one.
        with server_request(request.headers.get(_HEADER)) as fit_request:
            if fit_request.context is None:
                return await handler(request)
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # an answer too: acknowledge it
                fit_request.acknowledge(exc.headers, _set)
                raise
            if not response.prepared:
                fit_request.acknowledge(response.headers, _set)
            return response

    return fit_middleware


async def _on_request_start(
    session: ClientSession, ctx: SimpleNamespace, params: TraceRequestStartParams
) -> None:
    if HEADER not in params.headers:
        inject(params.headers, _set, params.url.host)


async def _on_request_redirect(
    session: ClientSession, ctx: SimpleNamespace, params: TraceRequestRedirectParams
) -> None:
    # aiohttp reuses the request's headers for the redirected request: a redirect to a host
    # that may not receive the tag must not carry it there.
    location = params.response.headers.get("Location")
    if location is None or HEADER not in params.headers:
        return
    if not propagates_to(params.url.join(URL(location)).host):
        params.headers.popall(HEADER, None)


async def _on_request_end(
    session: ClientSession, ctx: SimpleNamespace, params: TraceRequestEndParams
) -> None:
    if propagates_to(params.response.url.host):  # a third party's word is not taken
        absorb_ack(params.response.headers.get(ACK_HEADER))


def trace_config() -> TraceConfig:
    """A trace config that copies the running request's verified tag onto outgoing requests.

    ``aiohttp.ClientSession(trace_configs=[trace_config()])``; the hooks run in the task that
    makes the request, so they see that request's scope. Only hosts that
    ``fit.enable(propagate_to=...)`` allows receive the tag.
    """
    config = TraceConfig()
    config.on_request_start.append(_on_request_start)
    config.on_request_redirect.append(_on_request_redirect)
    config.on_request_end.append(_on_request_end)
    return config


def client_session(**kwargs: Any) -> ClientSession:
    """An ``aiohttp.ClientSession`` whose requests carry the running request's FIT tag."""
    configs = list(kwargs.pop("trace_configs", None) or [])
    return ClientSession(trace_configs=[*configs, trace_config()], **kwargs)


async def dependencies_handler(request: web.Request) -> web.StreamResponse:
    """The service's dependency keys, for ``resilience fit discover``.

    Answers only when FIT is enabled (404 otherwise) and the request carries a valid tag (403):
    the list names internal systems, and only whoever holds the FIT secret needs it.
    """
    answer = dependency_listing(request.headers.get(HEADER))
    if answer is None:
        raise web.HTTPNotFound()
    status, body = answer
    return web.json_response(body, status=status)


def routes(path: str = DEPENDENCIES_PATH) -> list[web.RouteDef]:
    """Routes to add to an app: ``app.add_routes(routes())``."""
    return [web.get(path, dependencies_handler)]
