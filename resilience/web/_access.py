"""What every admin route checks of a request: the bearer token and the JSON body.

Both are reached by anyone who can connect, token or not (the body only once authorised): they
answer 401 or 400 for whatever bytes arrive, never an exception that becomes a 500.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

__all__ = ["MAX_JSON_DEPTH", "bearer", "json_body", "matches"]

# Deeper JSON than this in a request body is refused (400) before it can exhaust the stack.
MAX_JSON_DEPTH = 32


def bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is the token, compared in constant time."""
    if given is None:
        return False
    # Header bytes that are not UTF-8 reach us as lone surrogates: they never match a token,
    # and must be a 401 like any wrong token, not an encoding error (a 500 and a traceback).
    try:
        raw = given.encode()
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, token.encode())


def _too_deep(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays/objects deeper than ``limit`` (strings skipped)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the usual small body: no need to walk it
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, or a 400 naming what is wrong with it."""
    # JSON is UTF-8 (RFC 8259): a charset in Content-Type is not trusted, a bogus one would
    # be a LookupError.
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise web.HTTPBadRequest(text="body must be UTF-8 JSON") from exc
    # json.loads recurses once per level: refuse deep nesting before it can hit the stack limit.
    if _too_deep(text, MAX_JSON_DEPTH):
        raise web.HTTPBadRequest(text=f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise web.HTTPBadRequest(text="body must be JSON") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
