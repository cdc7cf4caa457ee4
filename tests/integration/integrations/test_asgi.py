"""uvicorn serving a Starlette app behind ResilienceMiddleware, over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from resilience import current_scope, fit, protect
from resilience.errors import ConfigError
from resilience.fit import ACK_HEADER, DEPENDENCIES_PATH, HEADER, Recipe, decode_ack, sign_tag
from resilience.integrations.asgi import ResilienceMiddleware

from .conftest import SECRET
from .servers import Servers

RECIPE = Recipe.from_dict({"name": "db-down", "faults": [{"dependency": "asgi.db", "error": True}]})


def app(started: list[str]) -> Starlette:
    @protect("asgi.db", fallback="fallback", min_calls=1000)
    async def db() -> str:
        await asyncio.sleep(0)
        return "real"

    async def page(request: Request) -> JSONResponse:
        scope = current_scope()
        return JSONResponse({"db": await db(), "scoped": scope is not None})

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.01)  # the body is sent after the endpoint returned
                yield (await db()).encode() + b"\n"

        return StreamingResponse(chunks())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("startup")
        yield

    application = Starlette(
        routes=[Route("/page", page), Route("/stream", stream)], lifespan=lifespan
    )
    application.add_middleware(ResilienceMiddleware)
    return application


def test_tagged_requests_inject_and_are_acknowledged(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    started: list[str] = []
    base = servers.asgi(app(started))
    assert started == ["startup"]  # the lifespan scope went through the middleware
    tag = {HEADER: sign_tag(RECIPE, secret=SECRET)}
    with httpx.Client(base_url=base) as client:
        tagged = client.get("/page", headers=tag)
        assert tagged.json() == {"db": "fallback", "scoped": True}
        ack = decode_ack(tagged.headers.get(ACK_HEADER))
        assert ack is not None and ack.recipe == "db-down"
        assert ack.record == {("asgi.db", "error"): 1}
        plain = client.get("/page")
        assert plain.json() == {"db": "real", "scoped": True}
        assert ACK_HEADER not in plain.headers
        # a streamed body stays under the recipe after the endpoint has returned
        assert client.get("/stream", headers=tag).text == "fallback\n" * 3
        assert client.get("/stream").text == "real\n" * 3
        forged = client.get("/page", headers={HEADER: sign_tag(RECIPE, secret="not-ours")})
        assert forged.json()["db"] == "real" and ACK_HEADER not in forged.headers
    assert fit.tag_counts() == {"accepted": 2, "bad_signature": 1}
    assert fit.active_requests() == 0


def test_dependency_route_for_discovery(servers: Servers) -> None:
    base = servers.asgi(app([]))
    tag = {HEADER: sign_tag(Recipe(name="list"), secret=SECRET)}
    with httpx.Client(base_url=base) as client:
        assert client.get(DEPENDENCIES_PATH, headers=tag).status_code == 404  # FIT off: the app's
        fit.enable(secret=SECRET)
        assert client.get(DEPENDENCIES_PATH).status_code == 403
        listed = client.get(DEPENDENCIES_PATH, headers=tag)
        assert listed.status_code == 200 and listed.json() == {"dependencies": ["asgi.db"]}


async def test_discover_and_run_through_uvicorn(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    base = servers.asgi(app([]))
    found = await fit.discover(base + "/page", secret=SECRET, requests_per_dependency=1)
    assert found.dependencies == ("asgi.db",) and found.critical == ()
    report = await fit.run(
        Recipe.from_dict({**RECIPE.to_dict(), "expect": {"json": {"db": "fallback"}}}),
        base + "/page",
        secret=SECRET,
        requests=10,
        concurrency=2,
    )
    assert report.passed, report.to_text()
    assert report.injections() == {("asgi.db", "error"): 10}


async def test_a_typo_in_the_recipe_is_caught_before_the_run(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    base = servers.asgi(app([]))
    typo = Recipe.from_dict({"name": "t", "faults": [{"dependency": "asgi.dbb", "error": True}]})
    with pytest.raises(ConfigError, match="matches no dependency of the service") as info:
        await fit.run(typo, base + "/page", secret=SECRET, requests=5)
    assert info.value.field == "faults[0].dependency" and "asgi.db" in str(info.value)
    # without the pre-check, the acknowledgements show it after the run
    report = await fit.run(
        typo, base + "/page", secret=SECRET, requests=5, check_dependency_list=False
    )
    assert report.invalid and "matched no dependency call" in report.invalid[0]
    assert fit.stats.injections == {}


async def test_a_service_without_fit_makes_the_run_invalid(servers: Servers) -> None:
    base = servers.asgi(app([]))  # FIT never enabled in this process
    with pytest.raises(ConfigError, match="is FIT enabled"):
        await fit.run(RECIPE, base + "/page", secret=SECRET, requests=5)
    report = await fit.run(
        RECIPE, base + "/page", secret=SECRET, requests=5, check_dependency_list=False
    )
    assert not report.passed and report.verdict == "invalid"
    assert "carried X-Resilience-FIT-Ack" in report.invalid[0]


async def test_the_runner_reports_an_experiment_that_leaks(servers: Servers) -> None:
    """The page serialises its requests on one lock: a tagged request slowed by its fault
    holds the lock, so untagged requests behind it wait too. The fault is request-scoped,
    the capacity is not: the control traffic shows it against the baseline."""
    fit.enable(secret=SECRET)
    lock = asyncio.Lock()

    @protect("asgi.slow", timeout=2.0, min_calls=1000)
    async def slow() -> str:
        return "real"

    async def serial(request: Request) -> JSONResponse:
        async with lock:
            return JSONResponse({"db": await slow()})

    application = Starlette(routes=[Route("/serial", serial)])
    application.add_middleware(ResilienceMiddleware)
    base = servers.asgi(application)
    recipe = Recipe.from_dict(
        {"name": "slow", "faults": [{"dependency": "asgi.slow", "latency": 0.25}]}
    )
    report = await fit.run(
        recipe, base + "/serial", secret=SECRET, requests=12, tagged_share=0.5, concurrency=4
    )
    assert report.leaked and not report.passed, report.to_text()
    assert "LEAKED into control traffic: control p99" in report.to_text()
    assert report.to_dict()["leak"]["leaked"] is True
