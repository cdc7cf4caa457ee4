"""The FastAPI example under uvicorn, its downstream services real aiohttp servers."""

from __future__ import annotations

import httpx

from examples.fastapi_service import create_app
from examples.movies.downstream import make_app
from resilience import fit
from resilience.fit import ACK_HEADER, Recipe

from .conftest import SECRET
from .servers import Servers

RECIPES = "examples/recipes"


async def test_the_fastapi_example_survives_ratings_down(servers: Servers) -> None:
    urls = {name: servers.aiohttp(make_app(name)) for name in ("catalog", "ratings")}
    base = servers.asgi(create_app(urls, fit_secret=SECRET))
    async with httpx.AsyncClient() as client:
        page = (await client.get(base + "/home/u1")).json()
    assert page["degraded"] == {"ratings": False} and page["movies"][0]["stars"] == 5
    recipe = Recipe.load(f"{RECIPES}/ratings-down.yaml")
    report = await fit.run(recipe, base + "/home/u1", secret=SECRET, requests=20, concurrency=2)
    assert report.passed, report.to_text()
    assert report.injections() == {("ratings", "error"): 20}
    found = await fit.discover(base + "/home/u1", secret=SECRET, requests_per_dependency=1)
    assert found.critical == ("catalog",) and found.dependencies == ("catalog", "ratings")


async def test_the_tag_reaches_the_downstream_service(servers: Servers) -> None:
    """The instrumented client carries the tag to catalog, an aiohttp service with FIT glue."""
    from aiohttp import web

    from resilience import protect
    from resilience.integrations import aiohttp as fit_aiohttp

    @protect("catalog.db", min_calls=1000)
    async def db() -> dict[str, object]:
        return {"movies": [{"id": "m1", "title": "The Circuit"}]}

    async def handle(request: web.Request) -> web.Response:
        try:
            return web.json_response(await db())
        except Exception:
            return web.json_response({"error": "db"}, status=503)

    catalog = web.Application(middlewares=[fit_aiohttp.middleware()])
    catalog.router.add_get("/catalog", handle)
    urls = {"catalog": servers.aiohttp(catalog), "ratings": servers.aiohttp(make_app("ratings"))}
    base = servers.asgi(create_app(urls, fit_secret=SECRET))
    recipe = Recipe.from_dict(
        {"name": "catalog-db-down", "faults": [{"dependency": "catalog.db", "error": True}]}
    )
    async with httpx.AsyncClient() as client:
        tagged = await client.get(base + "/home/u1", headers=fit.tag_headers(recipe, secret=SECRET))
        assert tagged.status_code == 503  # catalog is critical: its own db failed downstream
        assert "catalog.db:error=1" in tagged.headers[ACK_HEADER]
        assert (await client.get(base + "/home/u1")).status_code == 200
