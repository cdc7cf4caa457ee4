"""The source protocol, and the sources that need no IO: in-memory and environment.

A source fetches and decodes; it hands a whole document (``{"flags": {...}}``) or a patch of
some flags to its *feed*, which validates flag by flag and installs what is valid. A source
reports what went wrong to the same feed (``kind``: read, parse, too_large, http, unreachable,
invalid, stopped...), and each good check with ``ok()``, so errors are counted and freshness is
shown in ``Flags.status()`` whatever the source.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

from ._redact import Redactor

__all__ = ["ENV_PREFIX", "EnvSource", "Feed", "InMemorySource", "Source", "Unreadable"]

log = logging.getLogger("resilience.flags")

ENV_PREFIX = "RESILIENCE_FLAG_"


class Unreadable:
    """Stands in a patch for a flag whose raw value could not be decoded (its last good stays)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unreadable({self.reason!r})"


class Feed(Protocol):
    """What a source delivers to (implemented by ``Flags`` for each of its sources)."""

    def publish(self, document: Any, *, stale: bool = False) -> bool:
        """Install a whole document; ``False`` when anything in it was refused.

        ``stale``: the document is a last known state (a backup file), not a fresh read.
        """

    def patch(
        self,
        changes: Mapping[str, Any],
        *,
        versions: Mapping[str, int] | None = None,
        replace: bool = False,
        stale: bool = False,
    ) -> frozenset[str]:
        """Install ``{name: spec}`` (``None`` deletes, ``Unreadable`` keeps the last good);
        ``replace``: these are all the flags. Returns the names refused."""

    def error(self, kind: str, message: str, *, flag: str | None = None) -> None:
        """Report a failed fetch or decode (of one ``flag``, or the whole source)."""

    def ok(self) -> None:
        """Report a good check that changed nothing (freshness)."""


class Source:
    """Base of every source: ``start(feed)`` loads once and starts polling when it polls.

    ``writable`` sources (``EtcdSource``) take ``write`` / ``delete`` that every process
    reading them sees; ``Flags`` sends fleet-wide writes to the last writable one.
    """

    name: str = "source"
    writable: bool = False

    def __init__(self) -> None:
        self._feed: Feed | None = None
        self._redact = Redactor()

    def start(self, feed: Feed) -> None:
        self._feed = feed
        self.refresh()

    def refresh(self) -> bool:
        """Fetch now, on the caller's thread; ``True`` when a new document was installed."""
        return False

    def stop(self) -> None:
        """Stop polling (a no-op for sources that do not poll)."""

    def after_fork(self) -> None:
        """Restart what a fork left behind (called in the child)."""

    def status(self) -> dict[str, Any]:
        """Source-specific facts for ``Flags.status()`` (secrets redacted)."""
        return {}

    def _publish(self, document: Any, *, stale: bool = False) -> bool:
        return self._feed.publish(document, stale=stale) if self._feed is not None else False

    def _ok(self) -> None:
        if self._feed is not None:
            self._feed.ok()

    def _error(self, kind: str, message: str, *, flag: str | None = None) -> None:
        message = self._redact(message)
        if self._feed is not None:
            self._feed.error(kind, message, flag=flag)
        else:
            log.warning("flag source %s: %s error: %s", self.name, kind, message)


class InMemorySource(Source):
    """Flags held in memory, ``InMemorySource({"kill": {"on": False}})``; ``update()`` swaps them.

    Useful in tests and for flags computed by the application itself.
    """

    def __init__(self, flags: Mapping[str, Any] | None = None, *, name: str = "memory") -> None:
        super().__init__()
        self.name = name
        self._flags: Mapping[str, Any] = dict(flags or {})

    def refresh(self) -> bool:
        return self._publish({"flags": self._flags})

    def update(self, flags: Mapping[str, Any]) -> bool:
        """Replace every flag of this source; ``False`` when a flag was refused.

        A refused flag keeps its last good spec; the valid flags beside it are installed.
        """
        self._flags = dict(flags)
        return self._publish({"flags": self._flags})


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw


class EnvSource(Source):
    """Flags from environment variables, read at start and on ``refresh()``.

    ``RESILIENCE_FLAG_KILL_RECOMMENDATIONS=true`` sets ``kill-recommendations``: after the
    prefix, the name is lower-cased, ``__`` becomes ``.`` and ``_`` becomes ``-``
    (``RESILIENCE_FLAG_RATINGS__TIMEOUT=0.5`` is ``ratings.timeout``). A value is read as JSON when
    it parses (``true``, ``0.5``, ``{"on": true, "rollout": 0.1}``), else as a string; a JSON
    object is a whole flag, a bool is a switch, anything else a value.
    """

    def __init__(
        self,
        prefix: str = ENV_PREFIX,
        *,
        environ: Mapping[str, str] | None = None,
        name: str = "env",
    ) -> None:
        super().__init__()
        self.name = name
        self.prefix = prefix
        self._environ = environ

    @staticmethod
    def flag_name(suffix: str) -> str:
        return suffix.lower().replace("__", ".").replace("_", "-")

    def refresh(self) -> bool:
        environ = os.environ if self._environ is None else self._environ
        flags: dict[str, Any] = {}
        for var, raw in sorted(environ.items()):
            if not var.startswith(self.prefix) or len(var) == len(self.prefix):
                continue
            value = _env_value(raw)
            if isinstance(value, dict):
                spec = value
            elif isinstance(value, bool):
                spec = {"on": value}
            else:
                spec = {"value": value}
            flags[self.flag_name(var[len(self.prefix) :])] = spec
        return self._publish({"flags": flags})
