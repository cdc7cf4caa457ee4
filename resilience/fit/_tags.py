"""Signed request tags: a recipe (or a recipe id), an expiry and a nonce, under HMAC-SHA256.

Wire form of the ``X-Resilience-FIT`` header::

    v1.<key id>.<payload>.<signature>

``payload`` is base64url (no padding) of compact JSON ``{"exp", "kid", "nonce", "recipe" |
"recipe_id"}``; ``signature`` is base64url HMAC-SHA256 under the key id's secret of the text
before it (``v1.<key id>.<payload>``). The key id travels in clear so the verifier picks the
secret before it parses anything, and again inside the payload so it is signed.

A tag is reusable until it expires: it must stay valid for every call it travels on within its
request, across hops and fan-out, so the nonce identifies a run rather than a single use. Expiry
is short (60 s by default) and a verifier refuses tags that claim to live longer than its
``max_ttl``, so a captured tag cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError
from ._recipe import Recipe

__all__ = [
    "DEFAULT_KEY_ID",
    "DEFAULT_MAX_TTL",
    "DEFAULT_TTL",
    "HEADER",
    "MAX_TAG_LENGTH",
    "Verdict",
    "sign_tag",
    "tag_headers",
    "verify_tag",
]

HEADER = "X-Resilience-FIT"
DEFAULT_TTL = 60.0
DEFAULT_MAX_TTL = 300.0
DEFAULT_KEY_ID = "default"
# aiohttp refuses header fields past 8190 bytes; a longer tag could not have arrived anyway.
MAX_TAG_LENGTH = 8190
_VERSION = "v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")

# Verification results, also the ``result`` label of the FIT_TAGS counter.
ACCEPTED = "accepted"
DISABLED = "disabled"
MALFORMED = "malformed"
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
TOO_LONG_LIVED = "ttl_too_long"
INVALID_RECIPE = "invalid_recipe"
UNKNOWN_RECIPE = "unknown_recipe"
# Valid, but the process already had ``max_active`` tagged requests: the request ran untagged.
OVER_LIMIT = "over_limit"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_bytes(secret: str | bytes, field: str = "secret") -> bytes:
    """The secret as bytes; refuses empty secrets."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not isinstance(raw, bytes) or not raw:
        raise ConfigError(field, "must be a non-empty str or bytes")
    return raw


def check_key_id(key_id: str, field: str = "key_id") -> str:
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ConfigError(field, f"must be 1..64 of [A-Za-z0-9_-], got {key_id!r}")
    return key_id


def _sign(secret: bytes, signed: str) -> bytes:
    return hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest()


def sign_tag(
    recipe: Recipe | str,
    *,
    secret: str | bytes,
    key_id: str = DEFAULT_KEY_ID,
    ttl: float = DEFAULT_TTL,
    now: float | None = None,
    nonce: str | None = None,
) -> str:
    """A tag carrying ``recipe`` (a Recipe, or the id of one the services know) for ``ttl`` s."""
    key = secret_bytes(secret)
    check_key_id(key_id)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise ConfigError("ttl", f"must be a number of seconds > 0, got {ttl!r}")
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {
        "exp": round(issued + ttl, 3),
        "kid": key_id,
        "nonce": nonce if nonce is not None else secrets.token_hex(8),
    }
    if isinstance(recipe, Recipe):
        payload["recipe"] = recipe.to_dict()
    elif isinstance(recipe, str) and recipe:
        payload["recipe_id"] = recipe
    else:
        raise ConfigError("recipe", f"must be a Recipe or a recipe id, got {recipe!r}")
    body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{_VERSION}.{key_id}.{body}"
    tag = f"{signed}.{_b64encode(_sign(key, signed))}"
    if len(tag) > MAX_TAG_LENGTH:
        raise ConfigError("recipe", f"too large for a tag ({len(tag)} chars); use a recipe id")
    return tag


def tag_headers(
    recipe: Recipe | str,
    *,
    secret: str | bytes,
    ttl: float = DEFAULT_TTL,
    key_id: str = DEFAULT_KEY_ID,
    now: float | None = None,
) -> dict[str, str]:
    """The headers that tag one request (or one run's requests) with ``recipe``."""
    return {HEADER: sign_tag(recipe, secret=secret, key_id=key_id, ttl=ttl, now=now)}


@attrs.frozen
class Verdict:
    """What verification concluded: ``result`` (a FIT_TAGS label) and, if accepted, the recipe."""

    result: str
    recipe: Recipe | None = None
    nonce: str | None = None
    expires: float | None = None


def verify_tag(
    tag: str,
    *,
    keys: Mapping[str, bytes],
    now: float,
    max_ttl: float = DEFAULT_MAX_TTL,
    recipes: Mapping[str, Recipe] | None = None,
) -> Verdict:
    """Check a tag; never raises. The recipe is parsed only after the signature matched."""
    if not isinstance(tag, str) or len(tag) > MAX_TAG_LENGTH:
        return Verdict(MALFORMED)
    parts = tag.split(".")
    if len(parts) == 3 or (len(parts) == 4 and not parts[3]):
        return Verdict(UNSIGNED)
    if len(parts) != 4 or parts[0] != _VERSION or not _B64.match(parts[2]):
        return Verdict(MALFORMED)
    _, key_id, body, signature = parts
    key = keys.get(key_id)
    if key is None:
        return Verdict(UNKNOWN_KEY)
    # Compare the canonical text, not decoded bytes: base64 leaves spare bits in the last
    # character, and a tag must not have several spellings that all verify.
    expected = _b64encode(_sign(key, f"{_VERSION}.{key_id}.{body}"))
    if not _B64.match(signature) or not hmac.compare_digest(expected, signature):
        return Verdict(BAD_SIGNATURE)
    # Signed by a key we hold: from here the content is ours, but stay defensive anyway.
    try:
        payload = json.loads(_b64decode(body))
    except Exception:  # bad base64, bad UTF-8, bad JSON, nesting too deep
        return Verdict(MALFORMED)
    if not isinstance(payload, dict) or payload.get("kid") != key_id:
        return Verdict(MALFORMED)
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
        return Verdict(MALFORMED)
    if exp <= now:
        return Verdict(EXPIRED)
    if exp - now > max_ttl:
        return Verdict(TOO_LONG_LIVED)
    nonce = payload.get("nonce")
    nonce = nonce if isinstance(nonce, str) else None
    if "recipe_id" in payload:
        recipe = (
            (recipes or {}).get(payload["recipe_id"])
            if isinstance(payload["recipe_id"], str)
            else None
        )
        if recipe is None:
            return Verdict(UNKNOWN_RECIPE)
        return Verdict(ACCEPTED, recipe, nonce, float(exp))
    try:
        # A tag never makes the service import code: exception names resolve only against
        # modules it already imported (a recipe naming another one is refused as invalid).
        recipe = Recipe.from_dict(payload.get("recipe"), imports=False)
    except Exception:
        return Verdict(INVALID_RECIPE)
    return Verdict(ACCEPTED, recipe, nonce, float(exp))
