"""Run the admin app on its own thread and event loop, for sync (threaded) services."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from ..errors import ConfigError
from ._app import admin_app

__all__ = ["AdminServer", "serve_admin"]

_START_TIMEOUT = 10.0
# Open streams are told to end on shutdown; this only bounds a handler that ignores it.
_SHUTDOWN_TIMEOUT = 2.0


class AdminServer:
    """A running admin app: ``url`` to reach it, ``stop()`` (or ``with``) to end it."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT, access_log=None)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="resilience-admin", daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the app, ending in ``/`` (the dashboard page)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> AdminServer:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the admin server did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except Exception as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            # The OS chose the port; the runner knows which.
            self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Close the listening socket and open streams, and end the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> AdminServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_admin(
    port: int = 0, host: str = "127.0.0.1", *, app: web.Application | None = None, **options: Any
) -> AdminServer:
    """Serve the admin app on ``host:port`` from a background thread; returns its handle.

    Args:
        port: TCP port; 0 lets the OS choose (read it from the handle's ``port`` or ``url``).
        host: address to bind; loopback unless you mean to expose it.
        app: an application to serve instead of ``admin_app(**options)``.
        options: passed to :func:`admin_app` (registry, caches, flags, token, ...).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError("port", f"must be an int in 0..65535, got {port!r}")
    if app is not None and options:
        raise ConfigError("app", "give either an app or admin_app options, not both")
    return AdminServer(app if app is not None else admin_app(**options), host, port).start()
