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
(``?create=1`` or ``"create": true`` in the body). A stale ``revision`` (someone else wrote
since) is a 409 carrying the flag's current state; the caller reads again and retries.

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

from ..errors import ConfigError, FlagConflictError, FlagStoreError
from ._flags import Flags
from ._writes import AuditEntry, AuditLog, WriteResult

__all__ = ["AUDIT_KEY", "FLAGS_KEY", "flags_admin_app"]

ACTOR_HEADER = "X-Resilience-Actor"
MAX_BODY = 64 * 1024
VISIBLE_WAIT = 2.0  # seconds a fleet-wide write waits to be seen here before answering

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUDIT_KEY = web.AppKey("resilience_flags_audit", AuditLog)
FLAGS_KEY = web.AppKey("resilience_flags", Flags)


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(
        {"error": message, "status": status, **extra}, status=status, headers=headers
    )


def _flag_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


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

    def describe(name: str) -> dict[str, Any] | None:
        found = flags.describe(name)
        if found is None:
            return None
        override = flags.overrides().get(name)
        override_spec = None if override is None else override.to_dict()
        return {"name": name, **found, "override": override_spec}

    def target_of(request: web.Request) -> str | web.Response:
        wanted = request.query.get("target")
        if wanted not in (None, "source", "override"):
            return _json_error(400, "target must be 'source' or 'override'")
        if wanted == "override" or (wanted is None and flags.writable is None):
            return "override"
        if flags.writable is None:
            return _json_error(400, "no writable source: target=source needs an EtcdSource")
        return "source"

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
        found = describe(request.match_info["name"])
        if found is None:
            return _json_error(404, "no such flag")
        return web.json_response(found)

    def record(
        request: web.Request,
        action: str,
        name: str,
        old: Any,
        new: Any,
        revision: int | None = None,
    ) -> None:
        audit_log.append(
            AuditEntry(
                time=wall(),
                who=actor(request),
                remote=request.remote,
                action=action,
                flag=name,
                old=old if old is None or isinstance(old, dict) else old.to_dict(),
                new=new if new is None or isinstance(new, dict) else new.to_dict(),
                revision=revision,
            )
        )

    def actor(request: web.Request) -> str:
        return request.headers.get(ACTOR_HEADER, "admin")[:200]

    async def read_body(request: web.Request) -> dict[str, Any] | web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _json_error(413, "body too large")
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            return _json_error(400, "body must be JSON (and not nested too deeply)")
        if not isinstance(body, dict) or len(set(body) & {"value", "flag"}) != 1:
            return _json_error(400, 'body must be {"value": ...} or {"flag": {...}}')
        if set(body) - {"value", "flag", "create", "revision"}:
            return _json_error(400, "body may hold value or flag, create and revision only")
        revision = body.get("revision")
        if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
            return _json_error(400, "revision must be an integer")
        return body

    async def visible(result: WriteResult) -> None:
        wait = getattr(flags.writable, "wait_revision", None)
        if wait is not None:
            await asyncio.to_thread(wait, result.revision, VISIBLE_WAIT)

    async def set_flag(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        target = target_of(request)
        if isinstance(target, web.Response):
            return target
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        create = _flag_true(body.get("create")) or _flag_true(request.query.get("create"))
        if name not in flags and not create:
            return _json_error(404, f'no flag {name!r}: pass ?create=1 (or "create": true)')
        old = flags.get(name)
        if target == "override":
            try:
                new = (
                    flags.set(name, body["value"])
                    if "value" in body
                    else flags.set_flag(name, body["flag"])
                )
            except ConfigError as exc:
                return _json_error(400, str(exc))
            record(request, "set", name, old, new)
            return web.json_response({**(describe(name) or {}), "target": "override"})
        try:
            if "value" in body:
                value = body["value"]
                result = await asyncio.to_thread(
                    lambda: flags.write_value(
                        name, value, actor=actor(request), revision=body.get("revision")
                    )
                )
            else:
                spec = body["flag"]
                if not isinstance(spec, dict):
                    return _json_error(400, "flag must be an object")
                result = await asyncio.to_thread(
                    lambda: flags.write(
                        name, spec, actor=actor(request), revision=body.get("revision")
                    )
                )
        except ConfigError as exc:
            return _json_error(400, str(exc))
        except FlagConflictError as exc:
            return _json_error(409, str(exc), revision=exc.actual, flag=describe(name))
        except FlagStoreError as exc:
            return _json_error(503, str(exc))
        record(request, "write", name, result.old, result.new, result.revision)
        await visible(result)
        return web.json_response(
            {
                **(describe(name) or {"name": name}),
                "target": result.target,
                "revision": result.revision,
            }
        )

    async def clear_flag(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        target = target_of(request)
        if isinstance(target, web.Response):
            return target
        if target == "override":
            old = flags.get(name)
            cleared = flags.clear(name)
            if cleared:
                record(request, "clear", name, old, flags.get(name))
            return web.json_response(
                {"name": name, "cleared": cleared, "flag": describe(name), "target": "override"}
            )
        try:
            revision = int(request.query["revision"]) if "revision" in request.query else None
        except ValueError:
            return _json_error(400, "revision must be an integer")
        try:
            result = await asyncio.to_thread(
                lambda: flags.remove(name, actor=actor(request), revision=revision)
            )
        except FlagConflictError as exc:
            return _json_error(409, str(exc), revision=exc.actual, flag=describe(name))
        except FlagStoreError as exc:
            return _json_error(503, str(exc))
        if result is None:
            return _json_error(404, f"no flag {name!r} in {flags.writable.name}")  # type: ignore[union-attr]
        record(request, "delete", name, result.old, None, result.revision)
        await visible(result)
        return web.json_response(
            {
                "name": name,
                "deleted": True,
                "flag": describe(name),
                "target": result.target,
                "revision": result.revision,
            }
        )

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
