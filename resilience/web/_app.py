"""The admin aiohttp application: /metrics, JSON state, event streams, the dashboard, flag edits.

Routes (relative to where the app is mounted):

====================  ======  ===============================================================
``/``                 GET     the dashboard page (static HTML/JS/CSS shipped in the package)
``/metrics``          GET     Prometheus exposition of the prometheus-client registry
``/state``            GET     everything: circuits, pools, caches, flags (JSON)
``/circuits``         GET     circuits only; ``/circuits/{name}`` one of them
``/circuits/{name}``  POST    ``{"state": "open" | "closed" | "reset"}`` forces a circuit (token)
``/dependencies``     GET     ``{"dependencies": [names]}``, what FIT discovery fails in turn
``/caches``           GET     each cache's ``status()``
``/flags``            GET     the flags object's ``status()``
``/flags/{name}``     POST    ``{"value": v}`` sets a runtime override (token)
``/flags/{name}``     DELETE  clears the override (token)
``/stream``           GET     SSE: ``state`` every interval, ``state_change`` on transitions
``/hystrix.stream``   GET     SSE in Hystrix's format, for the Hystrix dashboard and Turbine
====================  ======  ===============================================================

Write routes need ``Authorization: Bearer <token>``; without a configured token they are
refused. With ``protect_reads`` the read routes need it too; an ``EventSource`` cannot send
headers, so reads (never writes) also accept ``?access_token=``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ..circuit import Registry
from ..circuit import registry as default_registry
from ..errors import ConfigError
from ._state import HasStatus, circuit_view, hystrix_command, hystrix_pool, snapshot
from ._stream import CLIENTS, Message, StreamHub, serve_events

__all__ = ["AdminOptions", "Flags", "admin_app"]

STATIC = Path(__file__).parent / "static"
DEFAULT_INTERVAL = 1.0
DEFAULT_MAX_STREAM_CLIENTS = 5  # Hystrix's limit


class Flags(HasStatus, Protocol):
    """What the admin app needs from a flags object (``resilience.flags.Flags`` has it)."""

    def set(self, name: str, value: Any) -> None: ...

    def clear(self, name: str) -> None: ...


def _token(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(attribute.name, "must be a non-empty string or None")


def _interval(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(attribute.name, f"must be a number of seconds > 0, got {value!r}")


def _limit(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(attribute.name, f"must be an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class AdminOptions:
    """The admin app's settings, validated once."""

    token: str | None = attrs.field(default=None, validator=_token)
    protect_reads: bool = False
    interval: float = attrs.field(default=DEFAULT_INTERVAL, validator=_interval)
    max_stream_clients: int = attrs.field(default=DEFAULT_MAX_STREAM_CLIENTS, validator=_limit)

    def __attrs_post_init__(self) -> None:
        if self.protect_reads and self.token is None:
            raise ConfigError("protect_reads", "needs a token to protect reads with")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Admin:
    """Handlers of one admin app, bound to its registry, caches, flags and options."""

    def __init__(
        self,
        reg: Registry,
        caches: Mapping[str, HasStatus] | Iterable[HasStatus],
        flags: Flags | None,
        options: AdminOptions,
        prometheus_registry: CollectorRegistry,
    ) -> None:
        self.reg = reg
        self.caches = caches if isinstance(caches, Mapping) else tuple(caches)
        self.flags = flags
        self.options = options
        self.prometheus = prometheus_registry
        self.hub = StreamHub(reg, options.max_stream_clients)

    # -- access ---------------------------------------------------------------------------

    def read(self, handler: Handler) -> Handler:
        if not self.options.protect_reads:
            return handler
        token = self.options.token
        assert token is not None  # AdminOptions guarantees it

        async def guarded(request: web.Request) -> web.StreamResponse:
            given = _bearer(request) or request.query.get("access_token")
            if not _matches(given, token):
                raise web.HTTPUnauthorized(
                    text="admin token required", headers={"WWW-Authenticate": "Bearer"}
                )
            return await handler(request)

        return guarded

    def write(self, handler: Handler) -> Handler:
        token = self.options.token

        async def guarded(request: web.Request) -> web.StreamResponse:
            if token is None:
                raise web.HTTPForbidden(text="changes are disabled: no admin token configured")
            if not _matches(_bearer(request), token):
                raise web.HTTPUnauthorized(
                    text="admin token required", headers={"WWW-Authenticate": "Bearer"}
                )
            return await handler(request)

        return guarded

    # -- reads ----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # Rendering 200 dependencies takes milliseconds of CPU: keep it off the event loop so
        # async protected calls sharing this loop are not held up by a scrape.
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, self.prometheus)
        return web.Response(body=body, headers={"Content-Type": content_type})

    def state(self) -> dict[str, Any]:
        return snapshot(self.reg, self.caches, self.flags)

    async def get_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state())

    async def circuits(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"circuits": [circuit_view(dep) for dep in self.reg]})

    async def circuit(self, request: web.Request) -> web.StreamResponse:
        dep = self.reg.get(request.match_info["name"])
        if dep is None:
            raise web.HTTPNotFound(text="no such dependency")
        return web.json_response(circuit_view(dep))

    async def dependencies(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"dependencies": self.reg.names()})

    async def get_caches(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(snapshot(self.reg, self.caches, None)["caches"])

    async def get_flags(self, request: web.Request) -> web.StreamResponse:
        if self.flags is None:
            raise web.HTTPNotFound(text="no flags configured")
        return web.json_response(snapshot(self.reg, (), self.flags)["flags"])

    # -- writes ---------------------------------------------------------------------------

    async def force(self, request: web.Request) -> web.StreamResponse:
        dep = self.reg.get(request.match_info["name"])
        if dep is None:
            raise web.HTTPNotFound(text="no such dependency")
        body = await _json_body(request)
        action = body.get("state")
        if action == "open":
            dep.force_open()
        elif action == "closed":
            dep.force_closed()
        elif action == "reset":
            dep.reset()
        else:
            raise web.HTTPBadRequest(text='"state" must be "open", "closed" or "reset"')
        return web.json_response(circuit_view(dep))

    async def set_flag(self, request: web.Request) -> web.StreamResponse:
        flags = self._flags()
        body = await _json_body(request)
        if "value" not in body:
            raise web.HTTPBadRequest(text='body must be {"value": ...}')
        try:
            flags.set(request.match_info["name"], body["value"])
        except (ValueError, TypeError, KeyError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(snapshot(self.reg, (), flags)["flags"])

    async def clear_flag(self, request: web.Request) -> web.StreamResponse:
        flags = self._flags()
        try:
            flags.clear(request.match_info["name"])
        except (ValueError, KeyError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return web.json_response(snapshot(self.reg, (), flags)["flags"])

    def _flags(self) -> Flags:
        if self.flags is None:
            raise web.HTTPNotFound(text="no flags configured")
        return self.flags

    # -- streams --------------------------------------------------------------------------

    def _state_tick(self) -> list[Message]:
        return [("state", self.state())]

    def _hystrix_tick(self) -> list[Message]:
        out: list[Message] = []
        for dep in self.reg:
            out.append((None, hystrix_command(dep)))
            pool = hystrix_pool(dep)
            if pool is not None:
                out.append((None, pool))
        return out

    async def stream(self, request: web.Request) -> web.StreamResponse:
        interval = self.options.interval
        return await serve_events(request, self.hub, "state", interval, self._state_tick, True)

    async def hystrix_stream(self, request: web.Request) -> web.StreamResponse:
        # Hystrix's ?delay=ms sets the client's own interval, no faster than ours.
        interval = self.options.interval
        delay = request.query.get("delay")
        if delay is not None:
            try:
                interval = max(interval, float(delay) / 1000.0)
            except ValueError as exc:
                raise web.HTTPBadRequest(text="delay must be milliseconds") from exc
        return await serve_events(request, self.hub, "hystrix", interval, self._hystrix_tick, False)

    # -- lifecycle ------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        self.hub.start(asyncio.get_running_loop())

    async def on_shutdown(self, app: web.Application) -> None:
        self.hub.stop()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text="body must be JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


ADMIN_KEY = web.AppKey("resilience_admin", _Admin)


def admin_app(
    registry: Registry | None = None,
    *,
    caches: Mapping[str, HasStatus] | Iterable[HasStatus] = (),
    flags: Flags | None = None,
    token: str | None = None,
    protect_reads: bool = False,
    interval: float = DEFAULT_INTERVAL,
    max_stream_clients: int = DEFAULT_MAX_STREAM_CLIENTS,
    prometheus_registry: CollectorRegistry | None = None,
) -> web.Application:
    """The admin app; mount it with ``app.add_subapp("/admin", admin_app(...))`` or serve it.

    Args:
        registry: the resilience registry shown (the default one unless given).
        caches: objects with ``status() -> dict``, as a sequence or a ``{name: cache}`` mapping.
        flags: an object with ``status()``, ``set(name, value)`` and ``clear(name)``.
        token: the bearer token write routes need; None disables writes.
        protect_reads: read routes need the token too.
        interval: seconds between state messages on the streams.
        max_stream_clients: concurrent stream clients (both streams together); 503 past it.
        prometheus_registry: what ``/metrics`` renders; prometheus-client's default
            ``REGISTRY`` (where ``resilience`` installs its collector) unless given.
    """
    options = AdminOptions(
        token=token,
        protect_reads=protect_reads,
        interval=interval,
        max_stream_clients=max_stream_clients,
    )
    reg = registry if registry is not None else default_registry()
    reg.add_metrics_source(CLIENTS)
    admin = _Admin(
        reg,
        caches,
        flags,
        options,
        REGISTRY if prometheus_registry is None else prometheus_registry,
    )
    app = web.Application()
    app[ADMIN_KEY] = admin
    r, w = admin.read, admin.write
    app.router.add_get("/", r(admin.page))
    app.router.add_get("/metrics", r(admin.metrics))
    app.router.add_get("/state", r(admin.get_state))
    app.router.add_get("/circuits", r(admin.circuits))
    app.router.add_get("/circuits/{name}", r(admin.circuit))
    app.router.add_post("/circuits/{name}", w(admin.force))
    app.router.add_get("/dependencies", r(admin.dependencies))
    app.router.add_get("/caches", r(admin.get_caches))
    app.router.add_get("/flags", r(admin.get_flags))
    app.router.add_post("/flags/{name}", w(admin.set_flag))
    app.router.add_delete("/flags/{name}", w(admin.clear_flag))
    app.router.add_get("/stream", r(admin.stream))
    app.router.add_get("/hystrix.stream", r(admin.hystrix_stream))
    # The page's own files hold no data: served without the token so it can ask for one.
    app.router.add_static("/static", STATIC)
    app.on_startup.append(admin.on_startup)
    app.on_shutdown.append(admin.on_shutdown)
    return app
