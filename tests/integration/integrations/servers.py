"""Real servers on loopback, each in a thread of its own: uvicorn, werkzeug, aiohttp, grpcio.

Every server listens on a free port and is stopped by the ``servers`` fixture's exit; the test
talks to them over real sockets, so a FIT tag reaches each one only through its headers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
import uvicorn
from aiohttp import web
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.support import free_port


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:  # no access log in the test output
        return None


class Servers:
    """Starts servers and remembers how to stop each one."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def asgi(self, app: Any, *, lifespan: Literal["auto", "on", "off"] = "on") -> str:
        """uvicorn serving ``app`` (HTTP/1.1, no access log); returns its base URL.

        Args:
            lifespan: uvicorn's ``lifespan`` mode; "off" for apps that refuse the lifespan
                scope (Django's ASGIHandler raises on it, which "on" treats as a failed startup).
        """
        port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan=lifespan,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

        def stop() -> None:
            server.should_exit = True
            thread.join(10)

        self._stops.append(stop)
        return f"http://127.0.0.1:{port}"

    def wsgi(self, app: Any) -> str:
        """werkzeug's threaded WSGI server serving ``app``; returns its base URL."""
        port = free_port()
        server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            thread.join(10)
            server.server_close()

        self._stops.append(stop)
        return f"http://127.0.0.1:{port}"

    def aiohttp(self, app: web.Application) -> str:
        """An aiohttp server on its own event loop; returns its base URL."""
        port = free_port()
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert started.wait(10)

        def stop() -> None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

        self._stops.append(stop)
        return f"http://127.0.0.1:{port}"

    def add_stop(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            stop()
        self._stops.clear()


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = Servers()
    try:
        yield started
    finally:
        started.stop_all()
