"""HttpSource against a real aiohttp server on loopback: ETag and 304, bad JSON, server down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from resilience.flags import Flags, HttpSource
from tests.support import free_port

from .waiting import wait_for


class FlagServer:
    """Serves a flag document with an ETag; records what each request asked."""

    def __init__(self) -> None:
        self.body = json.dumps({"flags": {"a": {"on": True}}})
        self.version = 1
        self.requests: list[tuple[str | None, int]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        etag = f'"v{self.version}"'
        if request.headers.get("If-None-Match") == etag:
            self.requests.append((request.headers.get("If-None-Match"), 304))
            return web.Response(status=304, headers={"ETag": etag})
        self.requests.append((request.headers.get("If-None-Match"), 200))
        return web.Response(body=self.body, content_type="application/json", headers={"ETag": etag})

    def publish(self, body: Any) -> None:
        self.body = body if isinstance(body, str) else json.dumps(body)
        self.version += 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/flags", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/flags"


@pytest.fixture
async def server() -> AsyncIterator[FlagServer]:
    srv = FlagServer()
    await srv.start()
    yield srv
    if srv.runner is not None:
        await srv.stop()


async def until(condition: Any) -> bool:
    # The source polls from its own thread and loop; wait without blocking the server's loop.
    return await asyncio.to_thread(wait_for, condition)


async def test_etag_304_bad_json_invalid_and_server_down(server: FlagServer) -> None:
    src = HttpSource(server.url, interval=0.05, max_backoff=0.2, timeout=1.0)
    flags = Flags(src)
    try:
        assert await asyncio.to_thread(flags.ready, 10)
        assert flags.enabled("a") is True
        assert await until(lambda: src.not_modified >= 2)
        assert server.requests[0] == (None, 200)
        assert (('"v1"', 304)) in server.requests  # the ETag came back as If-None-Match
        assert flags.status()["sources"][0]["updates"] == 1  # 304s install nothing

        server.publish({"flags": {"a": {"on": False}}})
        assert await until(lambda: not flags.enabled("a"))

        server.publish("{not json")
        assert await until(lambda: flags.status()["sources"][0]["errors"].get("parse", 0) >= 1)
        server.publish({"flags": {"a": {"on": "sure"}}})
        assert await until(lambda: flags.status()["sources"][0]["errors"].get("invalid", 0) >= 1)
        assert flags.enabled("a") is False  # the last good document stays

        await server.stop()
        server.runner = None
        assert await until(
            lambda: flags.status()["sources"][0]["errors"].get("unreachable", 0) >= 2
        )
        assert src.failures >= 2
        assert flags.enabled("a") is False
        assert src.next_delay() <= 0.2  # backoff is capped

        await server.start()
        server.publish({"flags": {"a": {"on": True}}})
        assert await until(lambda: flags.enabled("a"))
        assert src.failures == 0
    finally:
        await asyncio.to_thread(flags.close)


async def test_a_server_down_at_start_leaves_defaults_and_reports_it() -> None:
    src = HttpSource(f"http://127.0.0.1:{free_port()}/flags", interval=5.0, timeout=1.0)
    flags = Flags(src)
    try:
        assert await asyncio.to_thread(flags.ready, 0.3) is False
        assert await until(lambda: flags.status()["sources"][0]["errors"] == {"unreachable": 1})
        assert flags.enabled("a", default=True) is True
        assert flags.status()["sources"][0]["last_update"] is None
        assert src.failures == 1
    finally:
        await asyncio.to_thread(flags.close)


async def test_no_response_ends_the_poller_and_big_ones_are_refused(server: FlagServer) -> None:
    src = HttpSource(server.url, interval=0.05, max_backoff=0.1, timeout=1.0, max_bytes=4096)
    flags = Flags(src)
    try:
        assert await asyncio.to_thread(flags.ready, 10)
        server.publish("[" * 100_000 + "]" * 100_000)  # RecursionError in a JSON parser
        assert await until(lambda: flags.status()["sources"][0]["errors"].get("too_large", 0) >= 1)
        server.publish('{"flags": ' + "[" * 2000 + "]" * 2000 + "}")  # deep, and under the cap
        assert await until(lambda: flags.status()["sources"][0]["errors"].get("parse", 0) >= 1)
        assert flags.enabled("a") is True  # the last good state stays
        server.publish({"flags": {"a": {"on": False}}})
        assert await until(lambda: not flags.enabled("a"))  # the poller lived on
        assert flags.status()["sources"][0]["running"] is True
    finally:
        await asyncio.to_thread(flags.close)


async def test_a_poller_thread_that_ends_shows_as_stopped(server: FlagServer) -> None:
    src = HttpSource(server.url, interval=0.05, timeout=1.0)

    async def fatal(session: object) -> bool:
        raise SystemExit("operator pulled the plug")

    src.poll = fatal  # type: ignore[method-assign]
    flags = Flags(src)
    try:
        assert await until(lambda: flags.status()["sources"][0]["running"] is False)
        st = flags.status()["sources"][0]
        assert st["stopped"] == "SystemExit" and st["errors"]["stopped"] == 1
        assert st["health"] == "error"
    finally:
        await asyncio.to_thread(flags.close)


async def test_credentials_in_the_url_are_redacted_everywhere(
    server: FlagServer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from prometheus_client import generate_latest

    from resilience.metrics import ResilienceCollector

    caplog.set_level(logging.DEBUG)
    host = server.url.removeprefix("http://")
    url = f"http://ops:hunter2pw@{host}?env=prod&token=t0ken-value&api_key=k3y"
    dead = f"http://ops:hunter2pw@127.0.0.1:{free_port()}/flags?token=t0ken-value"
    src, down = HttpSource(url, interval=0.05), HttpSource(dead, interval=0.05, timeout=0.5)
    flags = Flags(src, down)
    try:
        assert await until(lambda: "a" in flags)
        assert await until(lambda: flags.status()["sources"][1]["errors"])
        assert src.name == f"http:http://ops:***@{host}?env=prod&token=***&api_key=***"
        from prometheus_client import CollectorRegistry

        reg = CollectorRegistry()
        reg.register(ResilienceCollector())
        texts = [
            json.dumps(flags.status()),
            generate_latest(reg).decode(),
            repr(src),
            *(r.getMessage() for r in caplog.records if r.name.startswith("resilience")),
        ]
    finally:
        await asyncio.to_thread(flags.close)
    for text in texts:
        for secret in ("hunter2pw", "t0ken-value", "k3y"):
            assert secret not in text
