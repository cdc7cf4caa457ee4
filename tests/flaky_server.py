"""A real aiohttp server on loopback whose endpoints can be made slow or failing at runtime.

Runs its own event loop in a background thread so sync code (urllib) and async code (aiohttp)
can call it alike. ``hits`` counts requests that reached the server, per path.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from aiohttp import web


class FlakyServer:
    def __init__(self) -> None:
        self.mode = "ok"  # ok | fail | slow
        self.delay = 1.0
        self.hits: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.extra_routes: list[Any] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if self.mode == "fail":
            return web.Response(status=503, text="down")
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        return web.json_response({"path": request.path, "ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_routes(self.extra_routes)
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    def start(self) -> FlakyServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
