"""The example service: a page with four dependencies, two critical and two with fallbacks.

catalog and pricing are critical (no fallback: the page answers 503 without them); ratings
falls back to an empty list; the profile comes from memcached (dependency ``cache.profile.a``)
and falls back to a guest profile. catalog, pricing and ratings are real downstream aiohttp
services.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from pymemcache.client.base import PooledClient as Memcached

from resilience import FaultInjectedError, protect
from resilience.integrations import aiohttp as fit_aiohttp

CRITICAL = ("catalog", "pricing")
DEPENDENCIES = ("cache.profile.a", "catalog", "pricing", "ratings")


def downstream(payload: dict[str, Any]) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response(payload)

    app = web.Application()
    app.router.add_get("/", handle)
    return app


def example_app(urls: dict[str, str], memcached: tuple[str, int], **policy: Any) -> web.Application:
    # PooledClient: the page reads it from several threads at once (a plain Client is not
    # thread-safe and stalls to its timeout when two threads share its socket).
    cache = Memcached(memcached, connect_timeout=1.0, timeout=1.0)
    cache.set("profile:1", b"ada")
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def fetch(request: web.Request, name: str) -> Any:
        session = request.app[session_key]
        async with session.get(urls[name]) as response:
            response.raise_for_status()
            return await response.json()

    @protect("catalog", **policy)
    async def catalog(request: web.Request) -> Any:
        return await fetch(request, "catalog")

    @protect("pricing", **policy)
    async def pricing(request: web.Request) -> Any:
        return await fetch(request, "pricing")

    @protect("ratings", fallback=lambda request: {"ratings": []}, **policy)
    async def ratings(request: web.Request) -> Any:
        return await fetch(request, "ratings")

    @protect("cache.profile.a", fallback=lambda: "guest", **policy)
    async def profile() -> str:
        value = await asyncio.to_thread(cache.get, "profile:1")
        return value.decode() if value is not None else "guest"

    async def page(request: web.Request) -> web.Response:
        try:
            item, price = await asyncio.gather(catalog(request), pricing(request))
        except FaultInjectedError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status or 503)
        except Exception as exc:
            return web.json_response({"error": repr(exc)}, status=503)
        extra, user = await asyncio.gather(ratings(request), profile())
        body = {**item, **price, **extra, "user": user}
        return web.json_response(body)

    async def session_ctx(app: web.Application) -> Any:
        app[session_key] = fit_aiohttp.client_session()
        yield
        await app[session_key].close()
        cache.close()

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/page", page)
    app.add_routes(fit_aiohttp.routes())
    return app


async def start_example(serve: Any, memcached: tuple[str, int], **policy: Any) -> str:
    urls = {
        "catalog": await serve(downstream({"title": "Dune"})),
        "pricing": await serve(downstream({"price": 9})),
        "ratings": await serve(downstream({"ratings": [5, 4]})),
    }
    return await serve(example_app(urls, memcached, **policy)) + "/page"
