"""FIT in production, over real HTTP: signed tagged requests open their experiment's circuit
while untagged requests, interleaved with them, keep getting real answers and real metrics stay
clean.

A real aiohttp service (the FIT middleware, a protected ``ratings`` call made with aiohttp) in
front of a real downstream server that counts the requests reaching it; /metrics is scraped and
parsed with prometheus-client's own parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import State, fit, metrics, protect, registry
from resilience.fit import Recipe
from resilience.integrations import aiohttp as fit_aiohttp
from tests.flaky_server import FlakyServer
from tests.support import free_port

pytestmark = pytest.mark.integration

SECRET = "isolation-secret"
RECIPE = Recipe.from_dict(
    {"name": "ratings-down", "faults": [{"dependency": "ratings", "error": True}]}
)


@pytest.fixture
def downstream() -> Iterator[FlakyServer]:
    server = FlakyServer().start()
    yield server
    server.stop()


@pytest.fixture
async def service(downstream: FlakyServer) -> AsyncIterator[str]:
    fit.enable(secret=SECRET)
    session_key = web.AppKey("session", aiohttp.ClientSession)

    @protect("ratings", fallback={"ratings": "fallback"}, min_calls=5, window=10.0)
    async def ratings(request: web.Request) -> Any:
        async with request.app[session_key].get(downstream.url + "/ratings") as response:
            response.raise_for_status()
            return {"ratings": "real", "downstream": await response.json()}

    async def page(request: web.Request) -> web.Response:
        return web.json_response(await ratings(request))

    async def scrape(request: web.Request) -> web.Response:
        prom = CollectorRegistry()
        prom.register(metrics.ResilienceCollector())
        return web.Response(body=generate_latest(prom), content_type="text/plain")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = fit_aiohttp.client_session()
        yield
        await app[session_key].close()

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.router.add_get("/page", page)
    app.router.add_get("/metrics", scrape)
    app.cleanup_ctx.append(session_ctx)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        fit.disable()


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_tagged_traffic_opens_its_own_circuit_untagged_gets_real_answers(
    service: str, downstream: FlakyServer
) -> None:
    tagged_headers = fit.tag_headers(RECIPE, secret=SECRET)
    async with aiohttp.ClientSession() as client:
        for _ in range(30):  # interleaved, as in production: one tagged, one untagged
            async with client.get(service + "/page", headers=tagged_headers) as tagged:
                assert tagged.status == 200
                assert (await tagged.json())["ratings"] == "fallback"
            async with client.get(service + "/page") as untagged:
                assert untagged.status == 200
                assert (await untagged.json())["ratings"] == "real"
        async with client.get(service + "/metrics") as response:
            samples = parse(await response.text())

    dep = registry().dependency("ratings")
    assert dep.experiment_state("ratings-down") is State.OPEN
    assert dep.state is State.CLOSED
    assert downstream.hits["/ratings"] == 30  # every untagged request, no tagged one

    def calls(outcome: str) -> float:
        labels = (("dependency", "ratings"), ("outcome", outcome))
        return samples[("resilience_calls_total", labels)]

    def fit_calls(outcome: str) -> float:
        labels = (("dependency", "ratings"), ("outcome", outcome), ("recipe", "ratings-down"))
        return samples.get(("resilience_fit_calls_total", labels), 0.0)

    # The real metrics show real traffic only: no failure, no short-circuit, no fallback.
    assert calls("success") == 30
    assert calls("failure") == calls("short_circuited") == 0
    fallbacks = ("resilience_fallbacks_total", (("dependency", "ratings"), ("outcome", "success")))
    assert samples[fallbacks] == 0
    state = ("resilience_circuit_state", (("dependency", "ratings"), ("state", "closed")))
    assert samples[state] == 1
    # The experiment's own: 5 injected failures opened its circuit, the rest short-circuited.
    assert fit_calls("injected") == 5
    assert fit_calls("short_circuited") == 25
    assert fit_calls("success") == 0
