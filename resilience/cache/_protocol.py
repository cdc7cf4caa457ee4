"""The memcached text protocol without IO: commands as bytes, replies parsed from a buffer.

Both drivers (blocking sockets and an asyncio protocol) feed what they received into a
:class:`Parser`, which consumes complete replies only and says when the whole answer is in, so
a reply split over many packets (or trickled byte by byte) is parsed once, without re-reading.

Error replies: ``CLIENT_ERROR`` (the command was the caller's mistake, e.g. ``incr`` of a
non-numeric value) and ``SERVER_ERROR`` leave the stream in step, so the parser reads every
reply of a pipelined batch and then reports the first such error through :attr:`Parser.error`;
the connection stays usable. Anything else unexpected raises at once: the stream is out of step
and its connection must be closed.
"""

from __future__ import annotations

from typing import Any

from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
    MemcacheUnknownCommandError,
    MemcacheUnknownError,
)

__all__ = [
    "CAS",
    "GET",
    "GETS",
    "INCR",
    "OK",
    "REPLY",
    "Item",
    "Parser",
    "cas_cmd",
    "delete_cmd",
    "flush_cmd",
    "get_cmd",
    "incr_cmd",
    "store_cmd",
    "touch_cmd",
]

# (data, flags): what a zone returns for a hit; (data, flags, cas) for gets.
Item = tuple[bytes, int]

# Reply kinds: a get's values, a gets' values with cas tokens, storage/delete/touch replies
# (True applied, False not), incr/decr values (None: not found), cas replies (True stored,
# False exists, None not found), and OK lines (flush_all).
GET, GETS, REPLY, INCR, CAS, OK = 0, 1, 2, 3, 4, 5

_TRUE = frozenset((b"STORED", b"DELETED", b"TOUCHED"))
_FALSE = frozenset((b"NOT_STORED", b"NOT_FOUND", b"EXISTS"))
_CAS = {b"STORED": True, b"EXISTS": False, b"NOT_FOUND": None}


def get_cmd(keys: list[bytes], gets: bool = False) -> bytes:
    return (b"gets " if gets else b"get ") + b" ".join(keys) + b"\r\n"


def store_cmd(verb: bytes, key: bytes, data: bytes, flags: int, ttl: int) -> bytes:
    return b"%s %s %d %d %d\r\n%s\r\n" % (verb, key, flags, ttl, len(data), data)


def cas_cmd(key: bytes, data: bytes, flags: int, ttl: int, token: int) -> bytes:
    return b"cas %s %d %d %d %d\r\n%s\r\n" % (key, flags, ttl, len(data), token, data)


def delete_cmd(key: bytes) -> bytes:
    return b"delete " + key + b"\r\n"


def touch_cmd(key: bytes, ttl: int) -> bytes:
    return b"touch %s %d\r\n" % (key, ttl)


def incr_cmd(verb: bytes, key: bytes, delta: int) -> bytes:
    return b"%s %s %d\r\n" % (verb, key, delta)


def flush_cmd(delay: int) -> bytes:
    return b"flush_all %d\r\n" % delay


def _error(line: bytes) -> Exception | None:
    """The error a clean error line stands for, or None when the line is not one."""
    error: Exception | None = None
    if line.startswith(b"CLIENT_ERROR"):
        error = MemcacheClientError(line[13:].decode("ascii", "replace"))
    elif line.startswith(b"SERVER_ERROR"):
        error = MemcacheServerError(line[13:].decode("ascii", "replace"))
    return error


def _broken(line: bytes) -> Exception:
    text = line[:200].decode("ascii", "replace")
    kind = MemcacheUnknownCommandError if line == b"ERROR" else MemcacheUnknownError
    error: Exception = kind(text)
    return error


class Parser:
    """Parses the replies of one exchange as they arrive.

    ``feed(buf)`` consumes what it can from ``buf`` (leaving a partial reply in place) and
    returns True once ``count`` replies (one for the get kinds) are in; then ``result`` holds
    them and ``error`` the first clean error reply, if any.
    """

    __slots__ = ("_pos", "count", "error", "kind", "result")

    def __init__(self, kind: int, count: int = 1) -> None:
        self.kind = kind
        self.count = count
        self.error: Exception | None = None
        self._pos = 0
        self.result: Any = {} if kind <= GETS else []

    def feed(self, buf: bytearray) -> bool:
        if self.kind <= GETS:
            return self._feed_values(buf)
        return self._feed_lines(buf)

    def _feed_values(self, buf: bytearray) -> bool:
        pos, found = self._pos, self.result
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                self._pos = pos
                return False
            if buf.startswith(b"VALUE ", pos):
                parts = bytes(buf[pos:end]).split()
                size = int(parts[3])
                stop = end + 2 + size
                if len(buf) < stop + 2:
                    self._pos = pos
                    return False
                if buf[stop : stop + 2] != b"\r\n":
                    raise MemcacheUnknownError("value block not followed by CRLF")
                data = bytes(buf[end + 2 : stop])
                if self.kind == GETS:
                    found[parts[1]] = (data, int(parts[2]), int(parts[4]))
                else:
                    found[parts[1]] = (data, int(parts[2]))
                pos = stop + 2
                continue
            line = bytes(buf[pos:end])
            del buf[: end + 2]
            self._pos = 0
            if line == b"END":
                return True
            error = _error(line)
            if error is None:
                raise _broken(line)
            self.error = error
            return True

    def _feed_lines(self, buf: bytearray) -> bool:
        results, kind = self.result, self.kind
        start = 0
        try:
            while len(results) < self.count:
                end = buf.find(b"\r\n", start)
                if end < 0:
                    return False
                line = bytes(buf[start:end])
                start = end + 2
                if kind == REPLY:
                    if line in _TRUE:
                        results.append(True)
                        continue
                    if line in _FALSE:
                        results.append(False)
                        continue
                elif kind == INCR:
                    if line.isdigit():
                        results.append(int(line))
                        continue
                    if line == b"NOT_FOUND":
                        results.append(None)
                        continue
                elif kind == CAS:
                    if line in _CAS:
                        results.append(_CAS[line])
                        continue
                elif line == b"OK":
                    results.append(True)
                    continue
                error = _error(line)
                if error is None:
                    raise _broken(line)
                if self.error is None:
                    self.error = error
                results.append(None)
            return True
        finally:
            if start:
                del buf[:start]
