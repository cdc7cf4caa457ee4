"""httpx glue: an ``httpx.Client`` or ``httpx.AsyncClient`` that forwards the FIT tag.

```python
from resilience.integrations import httpx as fit_httpx

client = fit_httpx.instrument(httpx.AsyncClient())
```

Event hooks run in the task or thread that sends the request, so they see that request's
scope; they run for every request the client sends, redirects included, and each one's host is
checked against ``fit.enable(propagate_to=...)``. Downstream acknowledgements are merged into
the running request's.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from ..fit import ACK_HEADER, HEADER, absorb_ack, inject, propagates_to

__all__ = ["instrument"]

ClientT = TypeVar("ClientT", httpx.Client, httpx.AsyncClient)


def _set(request: httpx.Request, name: str, value: str) -> None:
    request.headers[name] = value


def _on_request(request: httpx.Request) -> None:
    host = request.url.host
    if HEADER not in request.headers:
        inject(request, _set, host)
    elif not propagates_to(host):  # a redirect keeps the headers: never to a third party
        del request.headers[HEADER]


def _on_response(response: httpx.Response) -> None:
    if propagates_to(response.request.url.host):  # a third party's word is not taken
        absorb_ack(response.headers.get(ACK_HEADER))


async def _on_request_async(request: httpx.Request) -> None:
    _on_request(request)


async def _on_response_async(response: httpx.Response) -> None:
    _on_response(response)


def instrument(client: ClientT) -> ClientT:
    """Add the FIT hooks to ``client`` (sync or async) and return it; idempotent."""
    hooks: dict[str, list[Any]] = {k: list(v) for k, v in client.event_hooks.items()}
    if isinstance(client, httpx.AsyncClient):
        request_hook: Any = _on_request_async
        response_hook: Any = _on_response_async
    elif isinstance(client, httpx.Client):
        request_hook, response_hook = _on_request, _on_response
    else:
        raise TypeError(f"instrument() wants an httpx.Client or AsyncClient, got {client!r}")
    if request_hook not in hooks.setdefault("request", []):
        hooks["request"].append(request_hook)
    if response_hook not in hooks.setdefault("response", []):
        hooks["response"].append(response_hook)
    client.event_hooks = hooks
    return client
