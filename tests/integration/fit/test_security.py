"""Forged tags change nothing and are counted; with FIT off even a valid tag changes nothing.

The server runs in a thread of its own, so hypothesis can drive it with plain blocking requests.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilience import FaultInjectedError, fit, protect
from resilience.circuit import Registry
from resilience.fit import HEADER, Recipe, sign_tag
from resilience.integrations import aiohttp as fit_aiohttp
from tests.integration.integrations.servers import Servers

from .conftest import SECRET

RECIPE = Recipe.from_dict({"name": "db-down", "faults": [{"dependency": "db", "status": 503}]})


@pytest.fixture
def server(fresh_registry: Registry) -> Iterator[str]:
    @protect("db", min_calls=10_000)
    async def db() -> str:
        return "rows"

    async def handle(request: web.Request) -> web.Response:
        try:
            return web.json_response({"db": await db()})
        except FaultInjectedError as exc:
            return web.json_response({"db": "failed"}, status=exc.status or 500)

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.router.add_get("/", handle)
    started = Servers()
    try:
        yield started.aiohttp(app) + "/"
    finally:
        started.stop_all()


def get(url: str, tag: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={} if tag is None else {HEADER: tag})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


NORMAL = (200, b'{"db": "rows"}')


def tampered() -> str:
    version, kid, body, sig = sign_tag(RECIPE, secret=SECRET).split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["exp"] += 3600
    new = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{version}.{kid}.{new}.{sig}"


def test_valid_tag_fails_the_dependency(server: str) -> None:
    fit.enable(secret=SECRET)
    assert get(server, sign_tag(RECIPE, secret=SECRET)) == (503, b'{"db": "failed"}')
    assert get(server, None) == NORMAL
    assert fit.tag_counts() == {"accepted": 1}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: sign_tag(RECIPE, secret=SECRET).rsplit(".", 1)[0], "unsigned"),
        (lambda: sign_tag(RECIPE, secret="wrong-key"), "bad_signature"),
        (lambda: sign_tag(RECIPE, secret=SECRET, key_id="other"), "unknown_key"),
        (tampered, "bad_signature"),
        (lambda: sign_tag(RECIPE, secret=SECRET, ttl=60, now=time.time() - 61), "expired"),
        (lambda: "v1.default.%%%.zzz", "malformed"),
    ],
)
def test_bad_tags_change_nothing_and_are_counted(server: str, make: object, reason: str) -> None:
    fit.enable(secret=SECRET)
    assert get(server, make()) == NORMAL  # type: ignore[operator]
    assert fit.tag_counts() == {reason: 1}


def test_fit_disabled_ignores_even_a_valid_tag(server: str) -> None:
    assert get(server, sign_tag(RECIPE, secret=SECRET)) == NORMAL
    assert fit.tag_counts() == {"disabled": 1}


HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=HEADER_TEXT, position=st.integers(0, 10_000), char=st.sampled_from("A_-.0z="))
def test_fuzzed_and_mutated_tags_change_nothing(
    server: str, junk: str, position: int, char: str
) -> None:
    fit.enable(secret=SECRET)
    fit.stats.reset()
    valid = sign_tag(RECIPE, secret=SECRET)
    i = position % len(valid)
    mutated = valid[:i] + char + valid[i + 1 :]
    candidates = [junk, "v1.default." + junk, mutated if mutated != valid else valid + char]
    for tag in candidates:
        assert get(server, tag) == NORMAL, tag
    counts = fit.tag_counts()
    assert sum(counts.values()) == 3 and "accepted" not in counts
