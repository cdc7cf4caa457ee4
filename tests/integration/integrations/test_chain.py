"""Three hops across stacks: ASGI (uvicorn) -> httpx -> WSGI (werkzeug) -> requests -> aiohttp.

One signed tag sent to the first hop makes the third hop inject its fault and the first hop
serve its fallback, while an untagged request through the same chain gets the real answer.
Forged and expired tags are ignored at every hop.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from aiohttp import web
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resilience import FaultInjectedError, fit, protect
from resilience.fit import ACK_HEADER, HEADER, Recipe, decode_ack, sign_tag
from resilience.integrations import aiohttp as fit_aiohttp
from resilience.integrations import httpx as fit_httpx
from resilience.integrations import requests as fit_requests
from resilience.integrations.asgi import ResilienceMiddleware as AsgiMiddleware
from resilience.integrations.wsgi import ResilienceMiddleware as WsgiMiddleware

from .conftest import SECRET
from .servers import Servers

RECIPE = Recipe.from_dict(
    {"name": "hop3-db-down", "faults": [{"dependency": "hop3.db", "status": 503}]}
)
REAL = {"hop1": {"hop2": {"hop3": "rows"}}}
FALLBACK = {"hop1": "fallback"}


def hop3() -> web.Application:
    @protect("hop3.db", min_calls=1000)
    async def db() -> str:
        return "rows"

    async def data(request: web.Request) -> web.Response:
        try:
            return web.json_response({"hop3": await db()})
        except FaultInjectedError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status or 500)

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.router.add_get("/data", data)
    app.add_routes(fit_aiohttp.routes())
    return app


def hop2(hop3_url: str) -> Any:
    session = fit_requests.instrument(requests.Session())

    @protect("hop2.hop3", isolation="semaphore", min_calls=1000)
    def call_hop3() -> Any:
        response = session.get(hop3_url + "/data", timeout=5)
        response.raise_for_status()
        return response.json()

    app = Flask("hop2")

    @app.get("/mid")
    def mid() -> Any:
        try:
            return jsonify(hop2=call_hop3())
        except requests.HTTPError as exc:
            return jsonify(error=str(exc)), 502

    app.wsgi_app = WsgiMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def hop1(hop2_url: str) -> Starlette:
    client = fit_httpx.instrument(httpx.AsyncClient(timeout=5))

    @protect("hop1.hop2", fallback="fallback", min_calls=1000)
    async def call_hop2() -> Any:
        response = await client.get(hop2_url + "/mid")
        response.raise_for_status()
        return response.json()

    async def front(request: Request) -> JSONResponse:
        return JSONResponse({"hop1": await call_hop2()})

    app = Starlette(routes=[Route("/front", front)])
    app.add_middleware(AsgiMiddleware)
    return app


@pytest.fixture
def chain(servers: Servers) -> dict[str, str]:
    fit.enable(secret=SECRET)
    third = servers.aiohttp(hop3())
    second = servers.wsgi(hop2(third))
    first = servers.asgi(hop1(second))
    return {"hop1": first + "/front", "hop2": second + "/mid", "hop3": third + "/data"}


def test_one_tag_fails_the_third_hop_and_the_first_serves_its_fallback(
    chain: dict[str, str],
) -> None:
    tagged = httpx.get(chain["hop1"], headers={HEADER: sign_tag(RECIPE, secret=SECRET)})
    assert tagged.status_code == 200 and tagged.json() == FALLBACK
    ack = decode_ack(tagged.headers.get(ACK_HEADER))
    assert ack is not None and ack.recipe == "hop3-db-down"
    # the third hop's injection came back through both hops' acknowledgements
    assert ack.record == {("hop3.db", "status"): 1}
    assert fit.stats.injections == {("hop3.db", "status"): 1}
    assert fit.tag_counts() == {"accepted": 3}  # verified once at every hop
    untagged = httpx.get(chain["hop1"])
    assert untagged.json() == REAL and ACK_HEADER not in untagged.headers


@pytest.mark.parametrize(
    ("make", "result"),
    [
        (lambda: sign_tag(RECIPE, secret="someone-else"), "bad_signature"),
        (lambda: sign_tag(RECIPE, secret=SECRET, ttl=60, now=time.time() - 61), "expired"),
        (lambda: sign_tag(RECIPE, secret=SECRET).rsplit(".", 1)[0], "unsigned"),
    ],
)
def test_forged_and_expired_tags_are_ignored_at_every_hop(
    chain: dict[str, str], make: Any, result: str
) -> None:
    tag = {HEADER: make()}
    expected = {"hop1": REAL, "hop2": REAL["hop1"], "hop3": REAL["hop1"]["hop2"]}
    for hop, url in chain.items():
        response = httpx.get(url, headers=tag)
        assert response.status_code == 200 and response.json() == expected[hop], hop
        assert ACK_HEADER not in response.headers
    assert fit.stats.injections == {}
    # each hop saw the tag once: the first hop sent nothing on, it had no verified tag
    assert fit.tag_counts() == {result: 3}


async def test_the_runner_checks_every_hop_and_sees_the_third_inject(
    chain: dict[str, str],
) -> None:
    routes = [url.rsplit("/", 1)[0] + fit.DEPENDENCIES_PATH for url in chain.values()]
    recipe = Recipe.from_dict({**RECIPE.to_dict(), "expect": {"json": FALLBACK}})
    # (the hops share this process's registry, so each route lists every hop's dependencies:
    # the check of one route alone is shown against a single service in test_asgi)
    report = await fit.run(
        recipe, chain["hop1"], secret=SECRET, requests=10, concurrency=2, dependencies_urls=routes
    )
    assert report.passed, report.to_text()
    assert report.injections() == {("hop3.db", "status"): 10}


def test_the_command_exits_2_when_the_run_proves_nothing(
    chain: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\nfaults:\n  - dependency: hop3.dbb\n    status: 503\n")
    command = [sys.executable, "-m", "resilience.cli", "fit", "run", str(path), "--target",
               chain["hop1"], "--requests", "4", "--quiet"]  # fmt: skip
    base = [*command, "--secret", SECRET]
    before = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert before.returncode == 2, before.stdout + before.stderr
    assert "faults[0].dependency" in before.stderr and "'hop3.dbb'" in before.stderr
    after = subprocess.run(
        [*base, "--no-dependency-check"], capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 2, after.stdout + after.stderr
    assert "INVALID" in after.stdout and "matched no dependency call" in after.stdout
    wrong_secret = subprocess.run(
        [*command, "--secret", "not-the-secret", "--no-dependency-check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong_secret.returncode == 2
    assert "carried X-Resilience-FIT-Ack" in wrong_secret.stdout
