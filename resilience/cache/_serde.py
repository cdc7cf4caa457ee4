"""Turning values into (bytes, flags) and back.

bytes, str and int are stored natively (an int as ASCII digits, so memcached's incr/decr work
on it); anything else as JSON, or with :class:`PickleSerde` as pickle. Flag values follow
pymemcache's ``pickle_serde`` (bytes 0, pickle 1, int 2, text 16), so data written by a plain
pymemcache client with that serde reads back here; JSON uses flag 32.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

from ..errors import CacheError

__all__ = [
    "FLAG_BYTES",
    "FLAG_INT",
    "FLAG_JSON",
    "FLAG_PICKLE",
    "FLAG_TEXT",
    "JsonSerde",
    "PickleSerde",
    "Serde",
]

FLAG_BYTES = 0
FLAG_PICKLE = 1
FLAG_INT = 2
FLAG_TEXT = 16
FLAG_JSON = 32


@runtime_checkable
class Serde(Protocol):
    """How values become stored bytes. ``flags`` (0..65535) travel with the value."""

    def dumps(self, value: Any) -> tuple[bytes, int]: ...

    def loads(self, data: bytes, flags: int) -> Any: ...


class JsonSerde:
    """bytes/str/int raw, everything else as JSON (the default; never runs code on load)."""

    def dumps(self, value: Any) -> tuple[bytes, int]:
        kind = type(value)
        if kind is bytes:
            return value, FLAG_BYTES
        if kind is str:
            return value.encode(), FLAG_TEXT
        if kind is int:
            return b"%d" % value, FLAG_INT
        return self._dumps_other(value)

    def _dumps_other(self, value: Any) -> tuple[bytes, int]:
        try:
            return json.dumps(value, separators=(",", ":")).encode(), FLAG_JSON
        except (TypeError, ValueError) as exc:
            raise CacheError(f"cannot serialise {type(value).__name__} as JSON: {exc}") from exc

    def loads(self, data: bytes, flags: int) -> Any:
        if flags == FLAG_BYTES:
            return data
        if flags == FLAG_TEXT:
            return data.decode()
        if flags == FLAG_INT:
            return int(data)
        if flags == FLAG_JSON:
            return json.loads(data)
        return self._loads_other(data, flags)

    def _loads_other(self, data: bytes, flags: int) -> Any:
        if flags == FLAG_PICKLE:
            raise CacheError("value was stored with pickle; read it with PickleSerde")
        raise CacheError(f"unknown value flags {flags}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PickleSerde(JsonSerde):
    """bytes/str/int raw, everything else pickled. Only for data no one else can write.

    Args:
        protocol: the pickle protocol (default ``pickle.HIGHEST_PROTOCOL``).
    """

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def _dumps_other(self, value: Any) -> tuple[bytes, int]:
        return pickle.dumps(value, protocol=self.protocol), FLAG_PICKLE

    def _loads_other(self, data: bytes, flags: int) -> Any:
        if flags == FLAG_PICKLE:
            return pickle.loads(data)
        return super()._loads_other(data, flags)
