"""ASGI glue: a pure ASGI 3 middleware (Starlette, FastAPI, Django ASGI, any ASGI server).

```python
from resilience.integrations.asgi import ResilienceMiddleware

app = FastAPI()
app.add_middleware(ResilienceMiddleware)        # or: app = ResilienceMiddleware(app)
```

Each HTTP request runs in a request scope (per-request cache dedup) and, when it carries a
verified FIT tag, under the tag's recipe until the application has sent the whole response; the
response of a tagged request carries the acknowledgement header, listing what was applied
before the response started (headers cannot change once sent). Lifespan and websocket scopes
pass through untouched. ``GET /_resilience/fit/dependencies`` answers ``resilience fit discover``
while FIT is enabled (with a valid tag; otherwise 403); ``dependencies_path=None`` leaves that
path to the application.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..fit import ACK_HEADER, DEPENDENCIES_PATH, HEADER, dependency_listing, server_request

__all__ = ["ResilienceMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TAG_KEY = HEADER.lower().encode("latin-1")
_ACK_KEY = ACK_HEADER.lower().encode("latin-1")


def _tag(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == _TAG_KEY:
            return bytes(value).decode("latin-1")
    return None


class ResilienceMiddleware:
    """Pure ASGI 3 middleware: request scope, FIT tag activation and acknowledgement.

    Args:
        app: the ASGI application to wrap.
        dependencies_path: where the dependency list for ``resilience fit discover`` is
            served, or None to serve none.
    """

    def __init__(self, app: ASGIApp, *, dependencies_path: str | None = DEPENDENCIES_PATH) -> None:
        self.app = app
        self.dependencies_path = dependencies_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websocket: not ours
            await self.app(scope, receive, send)
            return
        tag = _tag(scope)
        if scope.get("path") == self.dependencies_path and scope.get("method") == "GET":
            answer = dependency_listing(tag)
            if answer is not None:
                await _json(send, *answer)
                return
        with server_request(tag) as request:  # entering and leaving never wait
            if request.context is None:
                await self.app(scope, receive, send)
                return

            async def acknowledging_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    ack = request.ack()
                    if ack is not None:
                        headers = list(message.get("headers") or ())
                        headers.append((_ACK_KEY, ack.encode("latin-1")))
                        message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, acknowledging_send)


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
