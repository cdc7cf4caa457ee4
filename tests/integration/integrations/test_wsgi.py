"""werkzeug's threaded server serving a Flask app behind the WSGI ResilienceMiddleware."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
from flask import Flask, Response, jsonify

from resilience import current_scope, fit, protect
from resilience.fit import ACK_HEADER, DEPENDENCIES_PATH, HEADER, Recipe, decode_ack, sign_tag
from resilience.integrations.wsgi import ResilienceMiddleware

from .conftest import SECRET
from .servers import Servers

RECIPE = Recipe.from_dict({"name": "db-down", "faults": [{"dependency": "wsgi.db", "status": 503}]})


def flask_app(seen: list[object]) -> Flask:
    @protect("wsgi.db", fallback="fallback", min_calls=1000)
    def db() -> str:
        return "real"

    app = Flask(__name__)

    @app.get("/page")
    def page() -> Response:
        return jsonify(db=db(), scoped=current_scope() is not None)

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for _ in range(3):  # runs after the view returned, while the server sends the body
                seen.append(current_scope())
                yield db() + "\n"

        return Response(chunks(), mimetype="text/plain")

    app.wsgi_app = ResilienceMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def test_flask_behind_a_threaded_server(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    seen: list[object] = []
    base = servers.wsgi(flask_app(seen))
    tag = {HEADER: sign_tag(RECIPE, secret=SECRET)}
    with requests.Session() as session:
        tagged = session.get(base + "/page", headers=tag)
        assert tagged.json() == {"db": "fallback", "scoped": True}
        ack = decode_ack(tagged.headers.get(ACK_HEADER))
        assert ack is not None and ack.record == {("wsgi.db", "status"): 1}
        plain = session.get(base + "/page")
        assert plain.json() == {"db": "real", "scoped": True}
        assert ACK_HEADER not in plain.headers
        assert session.get(base + "/stream", headers=tag).text == "fallback\n" * 3
        assert len({id(s) for s in seen}) == 1 and None not in seen  # one scope for the body
        assert session.get(base + "/stream").text == "real\n" * 3
        expired = sign_tag(RECIPE, secret=SECRET, ttl=60, now=time.time() - 61)
        assert session.get(base + "/page", headers={HEADER: expired}).json()["db"] == "real"
        listed = session.get(base + DEPENDENCIES_PATH, headers=tag)
        assert listed.json() == {"dependencies": ["wsgi.db"]}
        assert session.get(base + DEPENDENCIES_PATH).status_code == 403
    assert fit.tag_counts() == {"accepted": 3, "expired": 1}
    assert fit.active_requests() == 0


def test_the_scope_ends_when_the_body_is_closed(servers: Servers) -> None:
    """A slow streamed body holds its max_active slot until the server closes it."""
    fit.enable(secret=SECRET, max_active=1)
    release = threading.Event()

    def app(environ: dict[str, object], start_response: object) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        yield b"first\n"
        release.wait(5)
        yield b"last\n"

    base = servers.wsgi(ResilienceMiddleware(app))
    tag = {HEADER: sign_tag(RECIPE, secret=SECRET)}
    with requests.get(base + "/", headers=tag, stream=True) as streaming:
        lines = streaming.iter_lines()
        assert next(lines) == b"first"
        assert fit.active_requests() == 1  # the app returned its iterable long ago
        second = requests.get(base + "/", headers=tag, stream=True)
        assert ACK_HEADER not in second.headers  # over max_active: ran untagged
        release.set()
        second.close()
        assert next(lines) == b"last"
    deadline = time.monotonic() + 5
    while fit.active_requests() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fit.active_requests() == 0
    assert fit.tag_counts() == {"accepted": 1, "over_limit": 1}


def test_a_server_that_never_closes_the_body_still_frees_the_slot() -> None:
    """Some servers skip ``close()`` (werkzeug's, when the client hangs up as it drains the
    socket): the slot comes back when the body is exhausted, and when its iteration fails."""
    fit.enable(secret=SECRET, max_active=1)
    tag = sign_tag(RECIPE, secret=SECRET)

    def app(environ: dict[str, object], start_response: object) -> Iterator[bytes]:
        start_response("200 OK", [])  # type: ignore[operator]
        yield b"chunk"
        if environ.get("PATH_INFO") == "/broken":
            raise RuntimeError("the body failed half-way")

    middleware = ResilienceMiddleware(app)
    environ = {"HTTP_X_RESILIENCE_FIT": tag, "PATH_INFO": "/", "REQUEST_METHOD": "GET"}
    body = middleware(environ, lambda status, headers, exc_info=None: None)
    assert fit.active_requests() == 1
    assert list(body) == [b"chunk"]  # exhausted, never closed
    assert fit.active_requests() == 0

    broken = middleware({**environ, "PATH_INFO": "/broken"}, lambda *a: None)
    assert next(iter(broken)) == b"chunk" and fit.active_requests() == 1
    with pytest.raises(RuntimeError):
        next(iter(broken))
    assert fit.active_requests() == 0
    broken.close()  # the server's close afterwards ends nothing twice
    assert fit.active_requests() == 0
    assert fit.tag_counts() == {"accepted": 2}
