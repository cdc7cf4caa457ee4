"""Service A calls service B over HTTP; the tag crosses the hop, B's dependency fails."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from resilience import FaultInjectedError, fit, protect
from resilience.fit import Recipe
from resilience.integrations import aiohttp as fit_aiohttp

from .conftest import SECRET

RECIPE = Recipe.from_dict({"name": "b-db-down", "faults": [{"dependency": "b.db", "status": 503}]})


def service_b() -> web.Application:
    # min_calls: injected failures count like real ones; here they must not trip the circuit
    # for the untagged requests running alongside.
    @protect("b.db", max_concurrent=100, min_calls=1000)
    async def db() -> str:
        return "rows"

    async def handle(request: web.Request) -> web.Response:
        try:
            return web.json_response({"db": await db()})
        except FaultInjectedError as exc:
            return web.json_response({"db": "failed"}, status=exc.status or 500)

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.router.add_get("/", handle)
    return app


def service_a(b_url: str, *, propagate: bool) -> web.Application:
    key = web.AppKey("session", aiohttp.ClientSession)

    @protect("a.service-b", max_concurrent=100)
    async def call_b(session: aiohttp.ClientSession) -> tuple[int, Any]:
        async with session.get(b_url) as response:
            return response.status, await response.json()

    async def handle(request: web.Request) -> web.Response:
        # Fan-out: the same tag travels on both calls.
        answers = await asyncio.gather(call_b(request.app[key]), call_b(request.app[key]))
        return web.json_response({"b": [status for status, _ in answers]})

    async def session_ctx(app: web.Application) -> Any:
        app[key] = fit_aiohttp.client_session() if propagate else aiohttp.ClientSession()
        yield
        await app[key].close()

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", handle)
    return app


async def test_tag_crosses_the_hop_and_untagged_requests_are_untouched(serve: Any) -> None:
    fit.enable(secret=SECRET)
    b_url = await serve(service_b())
    a_url = await serve(service_a(b_url, propagate=True))
    tagged = fit.tag_headers(RECIPE, secret=SECRET)
    async with aiohttp.ClientSession() as session:

        async def get(headers: dict[str, str]) -> Any:
            async with session.get(a_url, headers=headers) as response:
                assert response.status == 200
                return await response.json()

        results = await asyncio.gather(*(get(tagged if i % 2 else {}) for i in range(20)))
    for i, result in enumerate(results):
        assert result == {"b": [503, 503] if i % 2 else [200, 200]}, i
    assert fit.stats.injections[("b.db", "status")] == 20
    # One verification at A and one per fan-out call at B, for each of the 10 tagged requests.
    assert fit.tag_counts() == {"accepted": 30}


async def test_without_propagation_b_never_sees_the_recipe(serve: Any) -> None:
    fit.enable(secret=SECRET)
    b_url = await serve(service_b())
    a_url = await serve(service_a(b_url, propagate=False))
    headers = fit.tag_headers(RECIPE, secret=SECRET)
    async with aiohttp.ClientSession() as session, session.get(a_url, headers=headers) as response:
        assert await response.json() == {"b": [200, 200]}
    assert fit.tag_counts() == {"accepted": 1}
