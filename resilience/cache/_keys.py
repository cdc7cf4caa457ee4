"""Memcached keys: what is sent, and on which server of a zone it lives.

A key is at most 250 bytes without whitespace or control characters. A key that breaks these
rules is rejected with ``InvalidKeyError`` naming it, or, with ``hash_long_keys=True``, replaced
by ``b"\\xffsha256:" + hex digest`` of its bytes. No literal key can enter that namespace: a
``str`` key is UTF-8, which never holds the byte 0xFF, and a ``bytes`` key starting with 0xFF is
refused while hashing is on. A key is never sent broken (a space would split the command; a
long key is refused by the server).

Placement: rendezvous hashing over ``"host:port"`` node names with pymemcache's own
``RendezvousHash`` fed the key's text, so:

- a ``str`` key (ASCII or not) lands exactly where pymemcache's ``HashClient`` puts it (non-ASCII
  keys need ``allow_unicode_keys=True`` there);
- a ``bytes`` key that is not UTF-8 lands exactly where ``HashClient`` puts that bytes key;
- a ``bytes`` key that is UTF-8 lands where ``HashClient`` puts the equal ``str`` key. This is on
  purpose: ``"k"`` and ``b"k"`` are one memcached key, and must be on one server.
  ``HashClient`` hashes a bytes key's ``repr`` (``"b'k'"``) and so may put ``b"k"`` and ``"k"``
  on different servers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from ..errors import InvalidKeyError

__all__ = ["HASHED_PREFIX", "MAX_KEY_LENGTH", "key_encoder", "placement_text"]

MAX_KEY_LENGTH = 250
HASHED_PREFIX = b"\xffsha256:"
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
            if hash_long_keys and raw.startswith(b"\xff"):
                raise InvalidKeyError(key, "keys starting with 0xFF are reserved for hashed keys")
        else:
            raise InvalidKeyError(key, f"must be str or bytes, not {type(key).__name__}")
        if 0 < len(raw) <= MAX_KEY_LENGTH and not _UNSAFE.search(raw):
            return raw
        problem = _problem(raw)
        if hash_long_keys and raw:
            return HASHED_PREFIX + hashlib.sha256(raw).hexdigest().encode()
        raise InvalidKeyError(key, problem or "invalid")

    return encode


def placement_text(key: bytes) -> str:
    """The text rendezvous hashing sees for an encoded key (see the module docstring)."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return repr(key)
