"""Client glue forwards the tag only where propagate_to allows, and merges acknowledgements.

A third-party host is reached through a recording HTTP proxy on loopback: the clients send the
request for ``api.third-party.example`` to the proxy, which records what arrived and answers.
Nothing leaves the machine, and each client's host check sees the third party's name.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests
from aiohttp import web

from resilience import fit
from resilience.fit import HEADER, Recipe, sign_tag
from resilience.integrations import aiohttp as fit_aiohttp
from resilience.integrations import httpx as fit_httpx
from resilience.integrations import requests as fit_requests

from .conftest import SECRET
from .servers import Servers

RECIPE = Recipe(name="db-down")
ACK = "recipe=db-down; injected=remote.db:error=2"
THIRD = "http://api.third-party.example/data"
OWN = "http://10.20.30.40/data"  # a private address: the service's own network by default


def recorder(servers: Servers) -> tuple[str, list[tuple[str, str | None]]]:
    seen: list[tuple[str, str | None]] = []

    async def anything(request: web.Request) -> web.StreamResponse:
        seen.append((request.url.host or "", request.headers.get(HEADER)))
        if request.path == "/redirect":
            raise web.HTTPFound(request.query["to"], headers={"X-Resilience-FIT-Ack": ACK})
        return web.json_response({"ok": True}, headers={"X-Resilience-FIT-Ack": ACK})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return servers.aiohttp(app), seen


@pytest.fixture
def tag() -> str:
    fit.enable(secret=SECRET)
    return sign_tag(RECIPE, secret=SECRET)


def test_requests_and_httpx_sync(servers: Servers, tag: str) -> None:
    proxy, seen = recorder(servers)
    session = fit_requests.instrument(requests.Session())
    client = fit_httpx.instrument(httpx.Client(proxy=proxy))
    proxies = {"http": proxy}
    with fit.server_request(tag) as request:
        for get in (
            lambda url: session.get(url, proxies=proxies),
            lambda url: client.get(url, follow_redirects=True),
        ):
            get(OWN)
            get(THIRD)
            get(f"http://127.0.0.9/redirect?to={THIRD}")  # loopback, then a third party
        assert request.context is not None
        # acknowledgements merged from the allowed hosts only (OWN, the redirecting loopback
        # host): a third party's would be its word on what this experiment did
        assert request.context.record() == {("remote.db", "error"): 2 * 4}
    get_untagged = session.get(OWN, proxies=proxies)
    assert get_untagged.status_code == 200
    session.close()
    client.close()
    expected = [
        ("10.20.30.40", tag), ("api.third-party.example", None),
        ("127.0.0.9", tag), ("api.third-party.example", None),
    ] * 2 + [("10.20.30.40", None)]  # fmt: skip
    assert seen == expected


async def test_aiohttp_and_httpx_async(servers: Servers, tag: str) -> None:
    proxy, seen = recorder(servers)
    async with (
        fit_aiohttp.client_session() as session,
        fit_httpx.instrument(httpx.AsyncClient(proxy=proxy)) as client,
    ):

        async def via_aiohttp(url: str) -> Any:
            async with session.get(url, proxy=proxy) as response:
                return await response.json()

        async def via_httpx(url: str) -> Any:
            return (await client.get(url, follow_redirects=True)).json()

        async with fit.server_request(tag) as request:
            for get in (via_aiohttp, via_httpx):
                await get(OWN)
                await get(THIRD)
                await get(f"http://127.0.0.9/redirect?to={THIRD}")
            assert request.context is not None
            # aiohttp sees the final response only; httpx every hop (allowed hosts only)
            assert request.context.record() == {("remote.db", "error"): 2 * 3}
        await via_aiohttp(OWN)
    expected = [
        ("10.20.30.40", tag), ("api.third-party.example", None),
        ("127.0.0.9", tag), ("api.third-party.example", None),
    ] * 2 + [("10.20.30.40", None)]  # fmt: skip
    assert seen == expected


def test_propagate_to_replaces_the_default(servers: Servers) -> None:
    fit.enable(secret=SECRET, propagate_to=["*.corp.example", "127.0.0.1"])
    tag = sign_tag(RECIPE, secret=SECRET)
    proxy, seen = recorder(servers)
    with fit.server_request(tag), requests.Session() as raw:
        session = fit_requests.instrument(raw)
        for url in ("http://billing.corp.example/", OWN, "http://localhost/", "http://127.0.0.1/"):
            session.get(url, proxies={"http": proxy})
    assert [t is not None for _, t in seen] == [True, False, False, True]
