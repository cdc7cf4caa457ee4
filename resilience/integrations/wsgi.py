"""WSGI glue: a WSGI middleware (Flask ``app.wsgi_app``, Django ``get_wsgi_application()``).

```python
from resilience.integrations.wsgi import ResilienceMiddleware

flask_app.wsgi_app = ResilienceMiddleware(flask_app.wsgi_app)
```

Each request runs in a request scope and, when it carries a verified FIT tag, under the tag's
recipe, until its body is exhausted or the server closes it: a streamed response (a generator that
calls dependencies while it yields) stays under its scope for every chunk, and the scope ends
when the body is done, not when the application returns. The request runs in a copy of the
server thread's context (``contextvars``), so nothing of it stays on the worker thread
afterwards. The response of a tagged request carries the acknowledgement header (what was
applied before ``start_response``; headers cannot change once sent). ``GET
/_resilience/fit/dependencies`` answers ``resilience fit discover`` while FIT is enabled;
``dependencies_path=None`` leaves that path to the application.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ..fit import ACK_HEADER, DEPENDENCIES_PATH, ServerRequest, dependency_listing, server_request

__all__ = ["ResilienceMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_TAG_KEY = "HTTP_X_RESILIENCE_FIT"
_REASONS = {200: "200 OK", 403: "403 Forbidden"}


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ResilienceMiddleware:
    """WSGI middleware: request scope, FIT tag activation and acknowledgement.

    Args:
        app: the WSGI application to wrap.
        dependencies_path: where the dependency list for ``resilience fit discover`` is
            served, or None to serve none.
    """

    def __init__(self, app: WSGIApp, *, dependencies_path: str | None = DEPENDENCIES_PATH) -> None:
        self.app = app
        self.dependencies_path = dependencies_path

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        tag = environ.get(_TAG_KEY)
        if (
            environ.get("PATH_INFO") == self.dependencies_path
            and environ.get("REQUEST_METHOD") == "GET"
        ):
            answer = dependency_listing(tag)
            if answer is not None:
                status, body = answer
                data = json.dumps(body).encode()
                start_response(
                    _REASONS[status],
                    [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
                )
                return [data]
        context = contextvars.copy_context()
        request = server_request(tag)
        context.run(request.__enter__)
        try:
            result = context.run(self.app, environ, _acknowledging(start_response, request))
        except BaseException as exc:  # the scope and the max_active slot must not leak
            context.run(request.__exit__, type(exc), exc, exc.__traceback__)
            raise
        return _Body(result, request, context)


def _acknowledging(start_response: StartResponse, request: ServerRequest) -> StartResponse:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        ack = request.ack()
        if ack is not None:
            headers = [*headers, (ACK_HEADER, ack)]
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return start


class _Body:
    """The application's response iterable, iterated and closed inside the request's context.

    PEP 3333 has the server call ``close()`` once it is done with the body, whatever happened:
    that is when the request scope ends. Servers in the wild skip it on some paths (werkzeug's
    development server never calls it when the client hangs up while it drains the socket), so
    the scope, and its ``max_active`` slot, also end when the body is exhausted or its iteration
    raises; ``close()`` then only closes the application's iterable.
    """

    __slots__ = ("_closed", "_context", "_ended", "_iterator", "_request", "_result")

    def __init__(
        self, result: Iterable[bytes], request: ServerRequest, context: contextvars.Context
    ) -> None:
        self._result = result
        self._request = request
        self._context = context
        self._iterator: Iterator[bytes] | None = None
        self._closed = False
        self._ended = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            if self._iterator is None:
                self._iterator = self._context.run(iter, self._result)
            return self._context.run(next, self._iterator)
        except StopIteration:
            self._end(None)
            raise
        except BaseException as exc:
            self._end((type(exc), exc, exc.__traceback__))
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        error: _ExcInfo | None = None
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                self._context.run(close)
        except BaseException as exc:
            error = (type(exc), exc, exc.__traceback__)
            raise
        finally:
            self._end(error)

    def _end(self, error: _ExcInfo | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._context.run(self._request.__exit__, *(error or (None, None, None)))
