"""The admin aiohttp application: /metrics, JSON state, event streams, the dashboard, flag edits.

Routes (relative to where the app is mounted):

====================  ======  ===============================================================
``/``                 GET     the dashboard page (static HTML/JS/CSS shipped in the package);
                              mounted at ``/admin``, a request for ``/admin`` is redirected here
``/metrics``          GET     Prometheus exposition of the prometheus-client registry
``/state``            GET     everything: circuits, pools, caches, flags (JSON)
``/circuits``         GET     circuits only; ``/circuits/{name}`` one of them
``/circuits/{name}``  POST    ``{"state": "open" | "closed" | "reset"}`` forces a circuit (token)
``/dependencies``     GET     ``{"dependencies": [names]}``, what FIT discovery fails in turn
``/caches``           GET     each cache's ``status()``
``/flags``            GET     the flags object's ``status()``
``/flags/{name}``     POST    ``{"value": v}`` or ``{"flag": {...}}`` (token): written to the
                              flags' writable source (etcd, every process sees it) when there is
                              one, else or with ``?target=override`` an override in this process;
                              the answer says where (``target``, ``revision``). 404 for an unknown
                              name unless ``"create": true``; 409 for a stale ``"revision"``
``/flags/{name}``     DELETE  deletes it from the writable source, or clears the override
                              (``?target=override``, or no writable source) (token); 404 unknown
``/stream``           GET     SSE: ``state`` every interval, ``state_change`` on transitions
``/hystrix.stream``   GET     SSE in Hystrix's format, for the Hystrix dashboard and Turbine
====================  ======  ===============================================================

Write routes need ``Authorization: Bearer <token>``; without a configured token they are
refused. With ``protect_reads`` the read routes need it too; an ``EventSource`` cannot send
headers, so reads (never writes) also accept ``?access_token=``.

The state is computed once per ``interval`` and shared: the streams' tick and every ``/state``,
``/circuits``, ``/caches`` and ``/flags`` request in that interval read the same snapshot (a
write through this app refreshes it at once).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import REGISTRY, CollectorRegistry

from ..circuit import Registry
from ..circuit import registry as default_registry
from ..errors import ConfigError
from ..flags import Flags
from ..flags._change import (
    ACTOR_HEADER,
    Change,
    ChangeRequest,
    Refusal,
    actor_name,
    change_flag,
    clear_flag,
    read_request,
)
from ._access import bearer, json_body, matches
from ._state import HasStatus, circuit_view, hystrix_command, hystrix_pool, snapshot
from ._stream import CLIENTS, PING, Shared, StreamHub, encoded_frame, frame, serve_events

__all__ = ["AdminOptions", "Flags", "admin_app"]

STATIC = Path(__file__).parent / "static"
DEFAULT_INTERVAL = 1.0
DEFAULT_MAX_STREAM_CLIENTS = 5  # Hystrix's limit
# Messages queued for one stream client before it counts as fallen behind and is dropped: at the
# default interval, half a minute of a client not reading.
DEFAULT_STREAM_BACKLOG = 32


_Apply = Callable[..., Change | Refusal]


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
    stream_backlog: int = attrs.field(default=DEFAULT_STREAM_BACKLOG, validator=_limit)

    def __attrs_post_init__(self) -> None:
        if self.protect_reads and self.token is None:
            raise ConfigError("protect_reads", "needs a token to protect reads with")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen
class _StateSnapshot:
    """The admin state of one tick: the data, its JSON, and its stream frame, built once."""

    data: dict[str, Any]
    body: bytes
    frame: bytes


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
        self.hub = StreamHub(
            reg, options.max_stream_clients, options.interval, options.stream_backlog
        )
        self.shared_state = Shared(self._compute_state)
        self.shared_hystrix = Shared(self._compute_hystrix)
        self.hub.add_stream("state", self._state_frames)
        self.hub.add_stream("hystrix", self._hystrix_frames)

    # -- access ---------------------------------------------------------------------------

    def read(self, handler: Handler) -> Handler:
        if not self.options.protect_reads:
            return handler
        token = self.options.token
        assert token is not None  # AdminOptions guarantees it

        async def guarded(request: web.Request) -> web.StreamResponse:
            given = bearer(request) or request.query.get("access_token")
            if not matches(given, token):
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
            if not matches(bearer(request), token):
                raise web.HTTPUnauthorized(
                    text="admin token required", headers={"WWW-Authenticate": "Bearer"}
                )
            try:
                return await handler(request)
            finally:
                # What the write changed shows on the next read, not a tick later.
                self.shared_state.invalidate()

        return guarded

    # -- the shared state -----------------------------------------------------------------

    def _compute_state(self) -> _StateSnapshot:
        data = snapshot(self.reg, self.caches, self.flags)
        # default=str: a status() holding a datetime or a set must not take the page down.
        body = json.dumps(data, separators=(",", ":"), default=str).encode()
        return _StateSnapshot(data, body, encoded_frame("state", body))

    def _compute_hystrix(self) -> bytes:
        out: list[bytes] = []
        for dep in self.reg:
            out.append(frame(None, hystrix_command(dep)))
            pool = hystrix_pool(dep)
            if pool is not None:
                out.append(frame(None, pool))
        # Nothing registered yet: Hystrix pings, and Turbine keeps the connection.
        return b"".join(out) or PING

    def state(self) -> _StateSnapshot:
        return self.shared_state.get(self.options.interval)

    def _state_frames(self, fresh: bool) -> bytes:
        shared = self.shared_state
        return (shared.refresh() if fresh else self.state()).frame

    def _hystrix_frames(self, fresh: bool) -> bytes:
        shared = self.shared_hystrix
        return shared.refresh() if fresh else shared.get(self.options.interval)

    # -- reads ----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def to_page(self, request: web.Request) -> web.StreamResponse:
        # Mounted at /admin, "/admin" itself would be a 404, and the page's relative links
        # need the trailing slash: send the browser to /admin/.
        path = request.rel_url.path
        if path.endswith("/"):
            return await self.page(request)
        url = request.rel_url
        raise web.HTTPPermanentRedirect(
            location=str(url.with_path(path + "/").with_query(url.query))
        )

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # Rendering 200 dependencies takes milliseconds of CPU: keep it off the event loop so
        # async protected calls sharing this loop are not held up by a scrape.
        body = await asyncio.get_running_loop().run_in_executor(None, encoder, self.prometheus)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_state(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.state().body, content_type="application/json")

    async def circuits(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"circuits": self.state().data["circuits"]})

    async def circuit(self, request: web.Request) -> web.StreamResponse:
        dep = self.reg.get(request.match_info["name"])
        if dep is None:
            raise web.HTTPNotFound(text="no such dependency")
        return web.json_response(circuit_view(dep))

    async def dependencies(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"dependencies": self.reg.names()})

    async def get_caches(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state().data["caches"])

    async def get_flags(self, request: web.Request) -> web.StreamResponse:
        if self.flags is None:
            raise web.HTTPNotFound(text="no flags configured")
        return web.json_response(self.state().data["flags"])

    # -- writes ---------------------------------------------------------------------------

    async def force(self, request: web.Request) -> web.StreamResponse:
        dep = self.reg.get(request.match_info["name"])
        if dep is None:
            raise web.HTTPNotFound(text="no such dependency")
        body = await json_body(request)
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
        self._flags()
        asked = read_request(await json_body(request), request.query)
        return await self._change(request, change_flag, asked)

    async def clear_flag(self, request: web.Request) -> web.StreamResponse:
        self._flags()
        return await self._change(request, clear_flag, read_request(None, request.query))

    async def _change(
        self, request: web.Request, apply: _Apply, asked: ChangeRequest | Refusal
    ) -> web.StreamResponse:
        # The rules (where a change goes, what is refused) are the flags' own, shared with
        # flags_admin_app; this adapter only turns their answer into HTTP.
        flags = self._flags()
        if isinstance(asked, Refusal):
            return web.json_response(asked.body(), status=asked.status)
        actor = actor_name(request.headers.get(ACTOR_HEADER), "admin")
        name = request.match_info["name"]
        # A fleet-wide write is a round trip to etcd: never on the event loop.
        done = await asyncio.to_thread(apply, flags, name, asked, actor=actor)
        if isinstance(done, Refusal):
            return web.json_response(done.body(), status=done.status)
        # "time": a state message computed before it does not show this change; the page
        # does not draw one over the answer.
        return web.json_response(
            {**flags.status(), **done.where(), "changed": done.changed, "time": time.time()}
        )

    def _flags(self) -> Flags:
        if self.flags is None:
            raise web.HTTPNotFound(text="no flags configured")
        return self.flags

    # -- streams --------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        return await serve_events(request, self.hub, "state", self.options.interval, True)

    async def hystrix_stream(self, request: web.Request) -> web.StreamResponse:
        # Hystrix's ?delay=ms sets the client's own interval, no faster than ours.
        interval = self.options.interval
        delay = request.query.get("delay")
        if delay is not None:
            try:
                interval = max(interval, float(delay) / 1000.0)
            except ValueError as exc:
                raise web.HTTPBadRequest(text="delay must be milliseconds") from exc
        return await serve_events(request, self.hub, "hystrix", interval, False)

    # -- lifecycle ------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        self.hub.start(asyncio.get_running_loop())

    async def on_shutdown(self, app: web.Application) -> None:
        self.hub.stop()


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
    stream_backlog: int = DEFAULT_STREAM_BACKLOG,
    prometheus_registry: CollectorRegistry | None = None,
) -> web.Application:
    """The admin app; mount it with ``app.add_subapp("/admin", admin_app(...))`` or serve it.

    Args:
        registry: the resilience registry shown (the default one unless given).
        caches: objects with ``status() -> dict``, as a sequence or a ``{name: cache}`` mapping.
        flags: the ``resilience.flags.Flags`` shown and changed (writes go to its writable
            source when it has one, as ``flags_admin_app``'s do).
        token: the bearer token write routes need; None disables writes.
        protect_reads: read routes need the token too.
        interval: seconds between state messages on the streams.
        max_stream_clients: concurrent stream clients (both streams together); 503 past it.
        stream_backlog: messages queued for one stream client; a client that falls this far
            behind (it stopped reading) is disconnected and counted as dropped.
        prometheus_registry: what ``/metrics`` renders; prometheus-client's default
            ``REGISTRY`` (where ``resilience`` installs its collector) unless given.
    """
    options = AdminOptions(
        token=token,
        protect_reads=protect_reads,
        interval=interval,
        max_stream_clients=max_stream_clients,
        stream_backlog=stream_backlog,
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
    # After "/", which wins for "/" when the app is served standalone; mounted at /admin, this
    # one answers "/admin".
    app.router.add_get("", admin.to_page)  # a redirect shows nothing: no token needed
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
