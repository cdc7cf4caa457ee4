"""The server adapters at the protocol level: what passes through untouched, what is wrapped."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from resilience.context import FIT
from resilience.integrations.asgi import ResilienceMiddleware


def test_asgi_lifespan_and_websocket_scopes_pass_through_untouched() -> None:
    calls: list[tuple[Any, Any, Any, object]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send, FIT.get()))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        return None

    middleware = ResilienceMiddleware(app)
    for kind in ("lifespan", "websocket"):
        scope = {"type": kind, "headers": [(b"x-resilience-fit", b"v1.x.y.z")], "path": "/"}
        asyncio.run(middleware(scope, receive, send))
        assert calls[-1][:3] == (scope, receive, send)  # the very same objects
        assert calls[-1][0] == {
            "type": kind,
            "headers": [(b"x-resilience-fit", b"v1.x.y.z")],
            "path": "/",
        }


def test_integrations_import_no_framework_until_asked() -> None:
    import subprocess

    code = (
        "import sys, resilience, resilience.fit, resilience.integrations, "
        "resilience.integrations.asgi, resilience.integrations.wsgi\n"
        "loaded = [m for m in ('httpx', 'requests', 'grpc', 'starlette', 'flask', 'werkzeug')"
        " if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
