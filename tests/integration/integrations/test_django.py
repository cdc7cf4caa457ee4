"""Django behind both middlewares, over real sockets: ``get_wsgi_application()`` under
werkzeug's threaded server, ``get_asgi_application()`` under uvicorn."""

from __future__ import annotations

import asyncio
import time

import django
import httpx
import pytest
import requests
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

from resilience import Registry, current_scope, fit, protect
from resilience.fit import ACK_HEADER, HEADER, Recipe, decode_ack, sign_tag
from resilience.integrations import asgi, wsgi

from .conftest import SECRET
from .servers import Servers

RECIPE = Recipe.from_dict(
    {
        "name": "db-down",
        "faults": [
            {"dependency": "django.db", "status": 503},
            {"dependency": "django.adb", "error": True},
        ],
    }
)

# Django imports its URLconf (this module) once per process, so the views and the dependencies
# they call are built once, at import, in a registry of their own: the autouse fresh_registry
# fixture swaps the default registry for every test.
REGISTRY = Registry()


@protect("django.db", fallback="fallback", min_calls=1000, registry=REGISTRY)
def db() -> str:
    return "real"


@protect("django.adb", fallback="fallback", min_calls=1000, registry=REGISTRY)
async def adb() -> str:
    await asyncio.sleep(0)
    return "real"


def page(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"db": db(), "scoped": current_scope() is not None, "active": fit.active_requests()}
    )


async def async_page(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"db": await adb(), "scoped": current_scope() is not None, "active": fit.active_requests()}
    )


urlpatterns = [path("page", page), path("async-page", async_page)]


@pytest.fixture(scope="module", autouse=True)
def django_settings() -> None:
    """Django's settings are process-wide and cannot be unset, so they are configured on first
    use rather than at import (collecting this module changes nothing), and minimally: no
    database, no installed app, no middleware, and LOGGING_CONFIG=None so that ``setup()``
    leaves the process's logging (pytest's capture handlers) alone."""
    if settings.configured:
        return
    settings.configure(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        LOGGING_CONFIG=None,
    )
    django.setup()


def settled() -> int:
    """``fit.active_requests()`` once the servers have left the last request.

    The client holds the whole response before the server is done with it: werkzeug closes
    the body, and uvicorn's task returns from the application, after the last byte is sent.
    """
    deadline = time.monotonic() + 5
    while fit.active_requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    return fit.active_requests()


def test_django_wsgi_behind_a_threaded_server(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    base = servers.wsgi(wsgi.ResilienceMiddleware(get_wsgi_application()))
    with requests.Session() as session:
        plain = session.get(base + "/page")
        assert plain.json() == {"db": "real", "scoped": True, "active": 0}
        assert ACK_HEADER not in plain.headers
        forged = session.get(base + "/page", headers={HEADER: sign_tag(RECIPE, secret="not-ours")})
        assert forged.json() == {"db": "real", "scoped": True, "active": 0}
        assert ACK_HEADER not in forged.headers
        # last: the server may still hold a tagged request's slot after its response arrived
        tagged = session.get(base + "/page", headers={HEADER: sign_tag(RECIPE, secret=SECRET)})
        assert tagged.json() == {"db": "fallback", "scoped": True, "active": 1}
        ack = decode_ack(tagged.headers.get(ACK_HEADER))
        assert ack is not None and ack.recipe == "db-down"
        assert ack.record == {("django.db", "status"): 1}
    assert fit.tag_counts() == {"accepted": 1, "bad_signature": 1}
    assert settled() == 0


def test_django_asgi_with_an_async_view_under_uvicorn(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    # Django's ASGIHandler raises on the lifespan scope: uvicorn must not send it one.
    base = servers.asgi(asgi.ResilienceMiddleware(get_asgi_application()), lifespan="off")
    with httpx.Client(base_url=base) as client:
        plain = client.get("/async-page")
        assert plain.json() == {"db": "real", "scoped": True, "active": 0}
        assert ACK_HEADER not in plain.headers
        forged = client.get("/async-page", headers={HEADER: sign_tag(RECIPE, secret="not-ours")})
        assert forged.json() == {"db": "real", "scoped": True, "active": 0}
        assert ACK_HEADER not in forged.headers
        # last: the server may still hold a tagged request's slot after its response arrived
        tagged = client.get("/async-page", headers={HEADER: sign_tag(RECIPE, secret=SECRET)})
        assert tagged.json() == {"db": "fallback", "scoped": True, "active": 1}
        ack = decode_ack(tagged.headers.get(ACK_HEADER))
        assert ack is not None and ack.recipe == "db-down"
        assert ack.record == {("django.adb", "error"): 1}
    assert fit.tag_counts() == {"accepted": 1, "bad_signature": 1}
    assert settled() == 0
