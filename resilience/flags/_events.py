"""What ``Flags`` tells its listeners: a flag changed, or the health of its sources changed."""

from __future__ import annotations

import enum

import attrs

from ._model import Flag

__all__ = ["FlagChange", "Health", "HealthChange"]


@attrs.frozen(kw_only=True)
class FlagChange:
    """A flag changed: ``old`` / ``new`` are ``None`` when it appeared / disappeared."""

    name: str
    old: Flag | None
    new: Flag | None
    source: str | None


class Health(enum.StrEnum):
    """How well the sources of a ``Flags`` serve it, worst source first.

    ``ok``: every source delivered its last check. ``stale``: a source failed (or one of its
    flags was refused, or it serves its backup file) and its last good state is in force.
    ``error``: a source failed and never delivered anything good.
    """

    OK = "ok"
    STALE = "stale"
    ERROR = "error"


@attrs.frozen(kw_only=True)
class HealthChange:
    """The sources' health moved from ``old`` to ``new``; ``message`` says why (redacted)."""

    old: Health
    new: Health
    source: str | None
    message: str | None
