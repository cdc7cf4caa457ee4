"""Writing flags to etcd: compare-and-swap in one transaction with an audit record; history."""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, FlagConflictError
from ._etcd_client import EtcdClient, b64, prefix_end, unb64
from ._model import parse_one
from ._writes import AuditEntry, WriteResult

__all__ = ["EtcdWriter"]

log = logging.getLogger("resilience.flags")


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _revision(kv_or_header: dict[str, Any], field: str) -> int:
    return int(kv_or_header.get(field, 0) or 0)


class EtcdWriter:
    """The write half of ``EtcdSource`` (reads etcd directly, never the watched state)."""

    client: EtcdClient
    prefix: str
    audit_prefix: str
    name: str
    _key: bytes
    _end: bytes
    _wall: Callable[[], float]

    # -- writing --------------------------------------------------------------------------

    def _flag_key(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    def get(self, name: str) -> tuple[dict[str, Any] | None, int]:
        """(spec, mod_revision) of ``name`` read from etcd now; ``(None, 0)`` when absent."""
        answer = self.client.range(self._flag_key(name))
        kvs = answer.get("kvs") or []
        if not kvs:
            return None, 0
        try:
            spec = json.loads(unb64(kvs[0].get("value")))
        except (ValueError, RecursionError):
            spec = {"unreadable": unb64(kvs[0].get("value"))[:200].decode("utf-8", "replace")}
        return spec, _revision(kvs[0], "mod_revision")

    def read_all(self) -> dict[str, tuple[Any, int]]:
        """Every flag under the prefix read from etcd now: ``{name: (spec, mod_revision)}``."""
        answer = self.client.range(self._key, self._end)
        out: dict[str, tuple[Any, int]] = {}
        for kv in answer.get("kvs", []):
            name = unb64(kv.get("key")).decode("utf-8", "replace")[len(self.prefix) :]
            try:
                spec = json.loads(unb64(kv.get("value")))
            except (ValueError, RecursionError):
                spec = None
            out[name] = (spec, _revision(kv, "mod_revision"))
        return out

    def write(
        self,
        name: str,
        spec: Any,
        *,
        actor: str | None = None,
        revision: int | None = None,
    ) -> WriteResult:
        """Validate ``spec``, then compare-and-swap it into etcd with an audit record.

        ``revision``: the ``mod_revision`` the caller saw (0: must not exist); by default the
        one read just before. ``FlagConflictError`` when the flag changed in between,
        ``ConfigError`` for a bad spec (nothing written), ``FlagStoreError`` when etcd fails.
        """
        new = parse_one(name, spec).to_dict()
        result = self._swap(name, new, actor, revision)
        assert result is not None  # only a delete of nothing returns None
        return result

    def delete(
        self, name: str, *, actor: str | None = None, revision: int | None = None
    ) -> WriteResult | None:
        """Delete ``name`` (compare-and-swap, audited); ``None`` when it does not exist."""
        return self._swap(name, None, actor, revision)

    def _swap(
        self, name: str, new: dict[str, Any] | None, actor: str | None, revision: int | None
    ) -> WriteResult | None:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError("name", f"must be a non-empty string without blanks, got {name!r}")
        old, current = self.get(name)
        expected = current if revision is None else revision
        if expected != current:
            raise FlagConflictError(name, expected, current)
        if new is None and current == 0:
            return None
        key = self._flag_key(name)
        entry = AuditEntry(
            time=self._wall(),
            who=(actor or _default_actor())[:200],
            remote=socket.gethostname(),
            action="write" if new is not None else "delete",
            flag=name,
            old=old,
            new=new,
        )
        change: dict[str, Any]
        if new is None:
            change = {"request_delete_range": {"key": b64(key)}}
        else:
            change = {"request_put": {"key": b64(key), "value": b64(json.dumps(new))}}
        audit = {
            "request_put": {
                "key": b64(self._audit_key(name)),
                "value": b64(json.dumps(entry.to_dict())),
            }
        }
        answer = self.client.txn(
            [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(expected)}],
            [change, audit],
            [{"request_range": {"key": b64(key)}}],
        )
        if not answer.get("succeeded"):
            kvs = (answer.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            raise FlagConflictError(name, expected, _revision(kvs[0], "mod_revision") if kvs else 0)
        done = _revision(answer.get("header", {}), "revision")
        log.info(
            "flag %s %s in %s by %s (revision %d)", name, entry.action, self.name, entry.who, done
        )
        return WriteResult(name=name, target=self.name, revision=done, old=old, new=new)

    def _audit_prefix_of(self, name: str) -> str:
        return f"{self.audit_prefix}{urllib.parse.quote(name, safe='')}/"

    def _audit_key(self, name: str) -> bytes:
        return f"{self._audit_prefix_of(name)}{time.time_ns():020d}-{os.urandom(4).hex()}".encode()

    def history(self, name: str, limit: int = 100) -> list[AuditEntry]:
        """The last ``limit`` audited writes of ``name``, oldest first, with their revisions."""
        key = self._audit_prefix_of(name).encode()
        answer = self.client.range(key, prefix_end(key), sort_descending=True, limit=limit)
        entries = []
        for kv in reversed(answer.get("kvs", [])):
            try:
                data = json.loads(unb64(kv.get("value")))
                entries.append(AuditEntry.from_dict(data, _revision(kv, "mod_revision")))
            except (ValueError, RecursionError):  # ConfigError is a ValueError
                continue
        return entries
