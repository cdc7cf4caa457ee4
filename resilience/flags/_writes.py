"""What a fleet-wide write returns, and the audit record every write leaves behind."""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = ["DEFAULT_AUDIT_SIZE", "AuditEntry", "AuditLog", "WriteResult"]

DEFAULT_AUDIT_SIZE = 1000


@attrs.frozen(kw_only=True)
class WriteResult:
    """A write to a writable source: ``revision`` is the store's revision of the change."""

    name: str
    target: str
    revision: int
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One change: who, from where, when, what (``set``/``clear`` of an override in one
    process; ``write``/``delete`` fleet-wide, with the store's ``revision``), before and after."""

    time: float
    who: str
    remote: str | None
    action: str
    flag: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    revision: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, revision: int | None = None) -> AuditEntry:
        if not isinstance(data, dict):
            raise ConfigError("audit", f"must be an object, got {type(data).__name__}")
        fields = {f.name for f in attrs.fields(cls)}
        known = {k: v for k, v in data.items() if k in fields}
        if revision is not None:
            known["revision"] = revision
        try:
            return cls(**known)
        except TypeError as exc:
            raise ConfigError("audit", str(exc)) from exc


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
