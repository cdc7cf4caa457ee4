"""Admin routes (aiohttp): list and read flags, set and clear overrides, with an audit log.

Mount it in your own app: ``app.add_subapp("/flags", flags_admin_app(flags, token=secret))``.

======  ==========  ===========================================================================
GET     /           ``Flags.status()``
GET     /_audit     the most recent audit entries (newest last)
GET     /{name}     one flag: spec, source, override, current value
PUT     /{name}     body ``{"value": v}`` (``Flags.set``) or ``{"flag": {...}}`` (``set_flag``)
DELETE  /{name}     clear the override
======  ==========  ===========================================================================

Changes need ``Authorization: Bearer <token>`` (compared with ``hmac.compare_digest``): 401
without it. A bad body or value answers 400 and changes nothing. Every change is audited: who
(``X-Resilience-Actor`` header, else ``"admin"``), the peer address, when, the flag before and
after; kept in memory (bounded) and appended to a JSONL file when ``audit_path`` is given.
Reads are open unless ``protect_reads=True``.
"""

from __future__ import annotations

import collections
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

from ..errors import ConfigError
from ._flags import Flags

__all__ = ["AUDIT_KEY", "FLAGS_KEY", "AuditEntry", "AuditLog", "flags_admin_app"]

DEFAULT_AUDIT_SIZE = 1000
ACTOR_HEADER = "X-Resilience-Actor"
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One change made through the admin routes."""

    time: float
    who: str
    remote: str | None
    action: str  # "set" or "clear"
    flag: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class AuditLog:
    """The last ``size`` changes in memory, each also appended to ``path`` (JSONL) if given."""

    def __init__(self, size: int = DEFAULT_AUDIT_SIZE, path: str | Path | None = None) -> None:
        if size < 1:
            raise ConfigError("audit_size", f"must be >= 1, got {size!r}")
        self.entries: collections.deque[AuditEntry] = collections.deque(maxlen=size)
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> None:
        line = json.dumps(entry.to_dict(), sort_keys=True) + "\n"
        with self._lock:
            self.entries.append(entry)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(line)

    def recent(self, limit: int | None = None) -> list[AuditEntry]:
        entries = list(self.entries)
        return entries if limit is None else entries[-limit:]


AUDIT_KEY = web.AppKey("resilience_flags_audit", AuditLog)
FLAGS_KEY = web.AppKey("resilience_flags", Flags)


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


def flags_admin_app(
    flags: Flags,
    *,
    token: str,
    audit: AuditLog | None = None,
    audit_path: str | Path | None = None,
    protect_reads: bool = False,
    wall: Callable[[], float] = time.time,
) -> web.Application:
    """An aiohttp app with the flag admin routes (see the module docstring).

    Args:
        token: the bearer token every change must carry.
        audit: where changes are recorded (a new ``AuditLog(path=audit_path)`` by default);
            the app exposes it as ``app[AUDIT_KEY]``.
        protect_reads: require the token for GET routes too.
    """
    if not isinstance(token, str) or not token:
        raise ConfigError("token", "must be a non-empty string")
    audit_log = audit if audit is not None else AuditLog(path=audit_path)
    expected = f"Bearer {token}".encode()

    def authorized(request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def require_token(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not authorized(request):
                return _json_error(401, "bearer token required", **{"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return guarded

    read = require_token if protect_reads else (lambda handler: handler)

    def describe(name: str) -> dict[str, Any] | None:
        found = flags.describe(name)
        if found is None:
            return None
        override = flags.overrides().get(name)
        override_spec = None if override is None else override.to_dict()
        return {"name": name, **found, "override": override_spec}

    async def list_flags(request: web.Request) -> web.StreamResponse:
        return web.json_response(flags.status())

    async def read_audit(request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _json_error(400, "limit must be an integer")
        return web.json_response({"entries": [e.to_dict() for e in audit_log.recent(limit)]})

    async def read_flag(request: web.Request) -> web.StreamResponse:
        found = describe(request.match_info["name"])
        if found is None:
            return _json_error(404, "no such flag")
        return web.json_response(found)

    def record(request: web.Request, action: str, name: str, old: Any, new: Any) -> None:
        audit_log.append(
            AuditEntry(
                time=wall(),
                who=request.headers.get(ACTOR_HEADER, "admin")[:200],
                remote=request.remote,
                action=action,
                flag=name,
                old=None if old is None else old.to_dict(),
                new=None if new is None else new.to_dict(),
            )
        )

    async def set_flag(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _json_error(413, "body too large")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _json_error(400, "body must be JSON")
        if not isinstance(body, dict) or len(set(body) & {"value", "flag"}) != 1:
            return _json_error(400, 'body must be {"value": ...} or {"flag": {...}}')
        old = flags.get(name)
        try:
            if "value" in body:
                new = flags.set(name, body["value"])
            else:
                new = flags.set_flag(name, body["flag"])
        except ConfigError as exc:
            return _json_error(400, str(exc))
        record(request, "set", name, old, new)
        return web.json_response(describe(name))

    async def clear_flag(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        old = flags.get(name)
        cleared = flags.clear(name)
        if cleared:
            record(request, "clear", name, old, flags.get(name))
        return web.json_response({"name": name, "cleared": cleared, "flag": describe(name)})

    app = web.Application(client_max_size=MAX_BODY)
    app[AUDIT_KEY] = audit_log
    app[FLAGS_KEY] = flags
    app.router.add_get("/", read(list_flags))
    app.router.add_get("/_audit", read(read_audit))
    app.router.add_get("/{name}", read(read_flag))
    app.router.add_put("/{name}", require_token(set_flag))
    app.router.add_delete("/{name}", require_token(clear_flag))
    return app
