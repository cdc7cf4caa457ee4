"""Memcached keys: at most 250 bytes, no whitespace or control characters.

A key that breaks these rules is rejected with ``InvalidKeyError`` naming it, or, with
``hash_long_keys=True``, replaced by ``"sha256:" + hex digest`` of its UTF-8 bytes; it is never
sent broken (a space would split the command; a long key is refused by the server).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from ..errors import InvalidKeyError

__all__ = ["MAX_KEY_LENGTH", "key_encoder"]

MAX_KEY_LENGTH = 250
_UNSAFE = re.compile(rb"[\x00-\x20\x7f]")


def _problem(raw: bytes) -> str | None:
    if not raw:
        return "empty"
    if len(raw) > MAX_KEY_LENGTH:
        return f"{len(raw)} bytes, more than {MAX_KEY_LENGTH}"
    if _UNSAFE.search(raw):
        return "contains whitespace or control characters"
    return None


def key_encoder(hash_long_keys: bool) -> Callable[[str | bytes], bytes]:
    """A function turning a user's key into the bytes sent to memcached."""

    def encode(key: str | bytes) -> bytes:
        if type(key) is str:
            raw = key.encode()
        elif isinstance(key, bytes):
            raw = bytes(key)
        else:
            raise InvalidKeyError(key, f"must be str or bytes, not {type(key).__name__}")
        if 0 < len(raw) <= MAX_KEY_LENGTH and not _UNSAFE.search(raw):
            return raw
        problem = _problem(raw)
        if hash_long_keys and raw:
            return b"sha256:" + hashlib.sha256(raw).hexdigest().encode()
        raise InvalidKeyError(key, problem or "invalid")

    return encode
