"""Admin routes (aiohttp): list and read flags, change them fleet-wide or in this process, audited.

Mount it in your own app: ``app.add_subapp("/flags", flags_admin_app(flags, token=secret))``.

======  =================  ==================================================================
GET     /                  ``Flags.status()``
GET     /_audit            the changes made through these routes (newest last, ``?limit=``)
GET     /_history/{name}   the fleet-wide audit trail of one flag (writable source only)
GET     /{name}            one flag: spec, source, version, override, current value
PUT     /{name}            body ``{"value": v}`` or ``{"flag": {...}}``; optional ``"create":
                           true`` and ``"revision": n`` (compare-and-swap)
DELETE  /{name}            delete it fleet-wide, or clear the override (``?target=override``)
======  =================  ==================================================================

Where a change goes: with a writable source (``EtcdSource``) a change is written there, so every
process sees it (``target`` in the answer names the source, ``revision`` its revision);
without one, or with ``?target=override``, it is an override in this process only (``target``:
``"override"``). Writing a flag that does not exist is a 404 unless the caller asks to create it
(``?create=1`` or ``"create": true`` in the body); so is a DELETE of a name no source defines.
A stale ``revision`` (someone else wrote since) is a 409 carrying the flag's current state; the
caller reads again and retries. A store that cannot be reached is a 503. These rules live in
``_change``, which the admin app's ``/flags/{name}`` routes (``resilience.web``) share.

Changes need ``Authorization: Bearer <token>`` (compared with ``hmac.compare_digest``): 401
without it. A bad body or value answers 400 and changes nothing. Every change is audited: who
(``X-Resilience-Actor`` header, else ``"admin"``), the peer address, when, the flag before and
after; kept in memory (bounded) and appended to a JSONL file when ``audit_path`` is given, and,
for fleet-wide writes, in the store's own audit trail too.
Reads are open unless ``protect_reads=True``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import ConfigError, FlagStoreError
from ._change import (
    ACTOR_HEADER,
    Change,
    Refusal,
    actor_name,
    change_flag,
    describe_flag,
    read_request,
)
from ._change import clear_flag as _clear
from ._flags import Flags
from ._writes import AuditEntry, AuditLog

__all__ = ["AUDIT_KEY", "FLAGS_KEY", "flags_admin_app"]

MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUDIT_KEY = web.AppKey("resilience_flags_audit", AuditLog)
FLAGS_KEY = web.AppKey("resilience_flags", Flags)


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(
        {"error": message, "status": status, **extra}, status=status, headers=headers
    )


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
        # bytes that are not UTF-8 come back as surrogates: never a match, never a 500
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, expected)

    def require_token(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not authorized(request):
                return _json_error(401, "bearer token required")
            return await handler(request)

        return guarded

    read = require_token if protect_reads else (lambda handler: handler)

    async def list_flags(request: web.Request) -> web.StreamResponse:
        return web.json_response(flags.status())

    async def read_audit(request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _json_error(400, "limit must be an integer")
        return web.json_response({"entries": [e.to_dict() for e in audit_log.recent(limit)]})

    async def read_history(request: web.Request) -> web.StreamResponse:
        source = flags.writable
        if source is None:
            return _json_error(404, "no writable source keeps a history")
        try:
            entries = await asyncio.to_thread(source.history, request.match_info["name"])  # type: ignore[attr-defined]
        except FlagStoreError as exc:
            return _json_error(503, str(exc))
        return web.json_response({"entries": [e.to_dict() for e in entries]})

    async def read_flag(request: web.Request) -> web.StreamResponse:
        found = describe_flag(flags, request.match_info["name"])
        if found is None:
            return _json_error(404, "no such flag")
        return web.json_response(found)

    def record(request: web.Request, change: Change) -> None:
        audit_log.append(
            AuditEntry(
                time=wall(),
                who=actor(request),
                remote=request.remote,
                action=change.action,
                flag=change.name,
                old=change.old,
                new=change.new,
                revision=change.revision,
            )
        )

    def actor(request: web.Request) -> str:
        return actor_name(request.headers.get(ACTOR_HEADER), "admin")

    async def read_body(request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _json_error(413, "body too large")
        try:
            return json.loads(await request.read())
        except (ValueError, RecursionError):
            return _json_error(400, "body must be JSON (and not nested too deeply)")

    def answer(change: Change | Refusal, extra: dict[str, Any]) -> web.Response:
        if isinstance(change, Refusal):
            return web.json_response(change.body(), status=change.status)
        return web.json_response({**extra, "target": change.target, "revision": change.revision})

    async def set_flag(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        asked = read_request(body, request.query)
        if isinstance(asked, Refusal):
            return answer(asked, {})
        change = await asyncio.to_thread(change_flag, flags, name, asked, actor=actor(request))
        if isinstance(change, Change):
            record(request, change)
        return answer(change, describe_flag(flags, name) or {"name": name})

    async def clear_flag(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        asked = read_request(None, request.query)
        if isinstance(asked, Refusal):
            return answer(asked, {})
        change = await asyncio.to_thread(_clear, flags, name, asked, actor=actor(request))
        if not isinstance(change, Change):
            return answer(change, {})
        if change.changed:
            record(request, change)
        if change.action == "clear":
            extra = {"name": name, "cleared": change.changed, "flag": describe_flag(flags, name)}
        else:
            extra = {"name": name, "deleted": True, "flag": describe_flag(flags, name)}
        return answer(change, extra)

    app = web.Application(client_max_size=MAX_BODY)
    app[AUDIT_KEY] = audit_log
    app[FLAGS_KEY] = flags
    app.router.add_get("/", read(list_flags))
    app.router.add_get("/_audit", read(read_audit))
    app.router.add_get("/_history/{name}", read(read_history))
    app.router.add_get("/{name}", read(read_flag))
    app.router.add_put("/{name}", require_token(set_flag))
    app.router.add_delete("/{name}", require_token(clear_flag))
    return app
