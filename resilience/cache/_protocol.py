"""The memcached text protocol without IO: commands as bytes, replies parsed from lines.

Both drivers (blocking sockets and asyncio streams) use these functions; they differ only in how
they read a line or a number of bytes. Replies that are not what the command expects raise
pymemcache's own exception types, so sync and async callers catch the same errors.
"""

from __future__ import annotations

from collections.abc import Generator

from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
    MemcacheUnknownCommandError,
    MemcacheUnknownError,
)

__all__ = [
    "Item",
    "ReadLine",
    "check_error",
    "delete_cmd",
    "get_cmd",
    "incr_cmd",
    "parse_get",
    "parse_incr",
    "parse_reply",
    "store_cmd",
    "touch_cmd",
]

# (data, flags): what a zone returns for a hit; serialising happens above the zones.
Item = tuple[bytes, int]
# parse_get yields how many bytes it wants (-1: one line) and is sent them back.
ReadLine = -1


def get_cmd(keys: list[bytes]) -> bytes:
    return b"get " + b" ".join(keys) + b"\r\n"


def store_cmd(verb: bytes, key: bytes, data: bytes, flags: int, ttl: int) -> bytes:
    return b"%s %s %d %d %d\r\n%s\r\n" % (verb, key, flags, ttl, len(data), data)


def delete_cmd(key: bytes) -> bytes:
    return b"delete " + key + b"\r\n"


def touch_cmd(key: bytes, ttl: int) -> bytes:
    return b"touch %s %d\r\n" % (key, ttl)


def incr_cmd(verb: bytes, key: bytes, delta: int) -> bytes:
    return b"%s %s %d\r\n" % (verb, key, delta)


def check_error(line: bytes) -> None:
    """Raise the pymemcache error a server error line stands for."""
    if line.startswith(b"CLIENT_ERROR"):
        raise MemcacheClientError(line[13:].decode("ascii", "replace"))
    if line.startswith(b"SERVER_ERROR"):
        raise MemcacheServerError(line[13:].decode("ascii", "replace"))
    if line == b"ERROR":
        raise MemcacheUnknownCommandError(line.decode("ascii", "replace"))


# Reply lines (without CRLF) that mean "done" and "not done" for each command family.
_TRUE = frozenset((b"STORED", b"DELETED", b"TOUCHED"))
_FALSE = frozenset((b"NOT_STORED", b"NOT_FOUND", b"EXISTS"))


def parse_reply(line: bytes) -> bool:
    """Reply of set/add/delete/touch: True when applied, False when not (exists, not found)."""
    if line in _TRUE:
        return True
    if line in _FALSE:
        return False
    check_error(line)
    raise MemcacheUnknownError(line.decode("ascii", "replace"))


def parse_incr(line: bytes) -> int | None:
    """Reply of incr/decr: the new value, or None when the key does not exist."""
    if line == b"NOT_FOUND":
        return None
    if line.isdigit():
        return int(line)
    check_error(line)
    raise MemcacheUnknownError(line.decode("ascii", "replace"))


def parse_get(first: bytes) -> Generator[int, bytes, dict[bytes, Item]]:
    """Parse a get reply starting at its first line; yields sizes to read, returns the hits.

    A driver sends back one line (without CRLF) for ``ReadLine`` and exactly ``n + 2`` bytes
    (value and CRLF) for ``n``.
    """
    found: dict[bytes, Item] = {}
    line = first
    while line != b"END":
        if not line.startswith(b"VALUE "):
            check_error(line)
            raise MemcacheUnknownError(line.decode("ascii", "replace"))
        parts = line.split()
        size = int(parts[3])
        block = yield size
        found[parts[1]] = (block[:size], int(parts[2]))
        line = yield ReadLine
    return found
