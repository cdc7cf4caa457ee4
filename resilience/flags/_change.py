"""One flag change made through an admin route: where it goes, what it did, or why it was refused.

The one core behind both HTTP faces: the flag admin routes (``flags_admin_app``, PUT/DELETE
``/{name}``) and the admin app's ``/flags/{name}`` routes and dashboard (``resilience.web``).
Each reads its request, calls ``read_request`` and then ``change_flag`` / ``clear_flag`` here
(blocking: a write to etcd is network I/O, so call them off the event loop), and turns the
``Change`` or ``Refusal`` into its HTTP answer; ``Refusal.status`` is the HTTP status.

Where a change goes: with a writable source (``EtcdSource``) a change is written there and every
process sees it (``target``: the source's name, ``revision``: the store's revision of the change);
without one, or when the request says ``target=override``, it is an override in this process
(``target``: ``"override"``, no revision). Refusals: a bad body or value is ``invalid`` (400) and
changes nothing; a name no source defines is ``not_found`` (404) unless the request asks to
create it; a stale ``revision`` is a ``conflict`` (409) carrying the flag's current state; a store
that cannot be reached is ``unavailable`` (503).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import ConfigError, FlagConflictError, FlagStoreError
from ._flags import Flags
from ._model import Flag

__all__ = [
    "ACTOR_HEADER",
    "OVERRIDE_TARGET",
    "REFUSAL_STATUS",
    "Change",
    "ChangeRequest",
    "Refusal",
    "actor_name",
    "change_flag",
    "clear_flag",
    "describe_flag",
    "read_request",
]

log = logging.getLogger("resilience.flags.admin")

ACTOR_HEADER = "X-Resilience-Actor"
MAX_ACTOR = 200
OVERRIDE_TARGET = "override"
VISIBLE_WAIT = 2.0  # seconds a fleet-wide write waits to be seen here before answering

REFUSAL_STATUS = {"invalid": 400, "not_found": 404, "conflict": 409, "unavailable": 503}

_BODY_KEYS = frozenset({"value", "flag", "create", "revision"})


@attrs.frozen(kw_only=True)
class ChangeRequest:
    """What a route was asked: a plain ``value`` or a whole ``spec`` (for a write), where to
    (``target``: ``None`` for the default, ``"source"`` or ``"override"``), whether an unknown
    name may be created, and the ``revision`` the caller saw (compare-and-swap)."""

    has_value: bool = False
    value: Any = None
    spec: dict[str, Any] | None = None
    target: str | None = None
    create: bool = False
    revision: int | None = None


@attrs.frozen(kw_only=True)
class Change:
    """A change made. ``action``: ``set``/``clear`` (an override in this process) or
    ``write``/``delete`` (the writable source); ``changed`` is ``False`` for a clear that found no
    override; ``old``/``new`` are the flag before and after, as specs."""

    name: str
    action: str
    target: str
    revision: int | None
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    changed: bool = True

    def where(self) -> dict[str, Any]:
        """The part of an answer that says where the change went."""
        return {"name": self.name, "action": self.action, "target": self.target,
                "revision": self.revision}  # fmt: skip


@attrs.frozen(kw_only=True)
class Refusal:
    """A change refused, nothing changed. ``kind``: ``invalid``, ``not_found``, ``conflict``,
    ``unavailable``; a conflict carries the flag's ``revision`` and state (``flag``) now."""

    kind: str
    message: str
    revision: int | None = None
    flag: dict[str, Any] | None = None

    @property
    def status(self) -> int:
        return REFUSAL_STATUS[self.kind]

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``error``, ``status``, and for a conflict ``revision`` and ``flag``."""
        out: dict[str, Any] = {"error": self.message, "status": self.status}
        if self.kind == "conflict":
            out.update(revision=self.revision, flag=self.flag)
        return out


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


def _revision(value: Any) -> int | Refusal | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return Refusal(kind="invalid", message="revision must be an integer")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return Refusal(kind="invalid", message="revision must be an integer >= 0")
    return value


def read_request(body: Any, query: Mapping[str, str]) -> ChangeRequest | Refusal:
    """The change a route was asked for, from its JSON body (``None`` for a DELETE) and query.

    Body (writes): ``{"value": v}`` or ``{"flag": {...}}``, optional ``"create": true`` and
    ``"revision": n``, nothing else. Query: ``target=source|override``, ``create=1``,
    ``revision=n`` (DELETE's only way to give one).
    """
    target = query.get("target")
    if target not in (None, "source", OVERRIDE_TARGET):
        return Refusal(kind="invalid", message="target must be 'source' or 'override'")
    revision = _revision(query.get("revision"))
    if isinstance(revision, Refusal):
        return revision
    create = _true(query.get("create"))
    if body is None:
        return ChangeRequest(target=target, create=create, revision=revision)
    if not isinstance(body, dict) or len(body.keys() & {"value", "flag"}) != 1:
        return Refusal(kind="invalid", message='body must be {"value": ...} or {"flag": {...}}')
    if body.keys() - _BODY_KEYS:
        return Refusal(
            kind="invalid", message="body may hold value or flag, create and revision only"
        )
    spec = body.get("flag")
    if "flag" in body and not isinstance(spec, dict):
        return Refusal(kind="invalid", message="flag must be an object")
    if "revision" in body:
        if isinstance(body["revision"], str):
            return Refusal(kind="invalid", message="revision must be an integer")
        revision = _revision(body["revision"])
        if isinstance(revision, Refusal):
            return revision
    return ChangeRequest(
        has_value="value" in body,
        value=body.get("value"),
        spec=spec,
        target=target,
        create=create or _true(body.get("create")),
        revision=revision,
    )


def actor_name(given: str | None, default: str) -> str:
    """Who made a change, from a header: at most 200 characters, always encodable (bytes that
    were not UTF-8 become ``?``), the ``default`` when absent or blank."""
    if given is None or not given.strip():
        return default
    return given.strip()[:MAX_ACTOR].encode("utf-8", "replace").decode("utf-8")


def describe_flag(flags: Flags, name: str) -> dict[str, Any] | None:
    """One flag as the routes show it: its status entry, name and override (``None``: unknown)."""
    found = flags.describe(name)
    if found is None:
        return None
    override = flags.overrides().get(name)
    return {"name": name, **found, "override": None if override is None else override.to_dict()}


def _spec(flag: Flag | None) -> dict[str, Any] | None:
    return None if flag is None else flag.to_dict()


def _target(flags: Flags, wanted: str | None) -> str | Refusal:
    if wanted == OVERRIDE_TARGET or (wanted is None and flags.writable is None):
        return OVERRIDE_TARGET
    if flags.writable is None:
        return Refusal(
            kind="invalid", message="no writable source: target=source needs an EtcdSource"
        )
    return "source"


def _visible(flags: Flags, revision: int) -> None:
    # Answer once this process sees its own write, so the answer (and the next read) shows it.
    wait = getattr(flags.writable, "wait_revision", None)
    if wait is not None:
        wait(revision, VISIBLE_WAIT)


def _conflict(flags: Flags, name: str, exc: FlagConflictError) -> Refusal:
    return Refusal(
        kind="conflict", message=str(exc), revision=exc.actual, flag=describe_flag(flags, name)
    )


def _logged(change: Change, actor: str) -> Change:
    log.info(
        "flag %r: %s by %s (%s, revision %s)",
        change.name, change.action, actor, change.target, change.revision,
    )  # fmt: skip
    return change


def change_flag(flags: Flags, name: str, request: ChangeRequest, *, actor: str) -> Change | Refusal:
    """Set flag ``name`` as ``request`` says: in the writable source, or as an override."""
    target = _target(flags, request.target)
    if isinstance(target, Refusal):
        return target
    if name not in flags and not request.create:
        return Refusal(
            kind="not_found", message=f'no flag {name!r}: pass ?create=1 (or "create": true)'
        )
    if request.has_value == (request.spec is not None):
        return Refusal(kind="invalid", message='a change needs a "value" or a "flag"')
    old = _spec(flags.get(name))
    if target == OVERRIDE_TARGET:
        try:
            new = (
                flags.set(name, request.value)
                if request.has_value
                else flags.set_flag(name, request.spec or {})
            )
        except ConfigError as exc:
            return Refusal(kind="invalid", message=str(exc))
        change = Change(name=name, action="set", target=OVERRIDE_TARGET, revision=None,
                        old=old, new=new.to_dict())  # fmt: skip
        return _logged(change, actor)
    try:
        if request.has_value:
            result = flags.write_value(name, request.value, actor=actor, revision=request.revision)
        else:
            result = flags.write(name, request.spec or {}, actor=actor, revision=request.revision)
    except ConfigError as exc:
        return Refusal(kind="invalid", message=str(exc))
    except FlagConflictError as exc:
        return _conflict(flags, name, exc)
    except FlagStoreError as exc:
        return Refusal(kind="unavailable", message=str(exc))
    _visible(flags, result.revision)
    change = Change(name=name, action="write", target=result.target, revision=result.revision,
                    old=result.old, new=result.new)  # fmt: skip
    return _logged(change, actor)


def clear_flag(flags: Flags, name: str, request: ChangeRequest, *, actor: str) -> Change | Refusal:
    """Undo flag ``name``: delete it from the writable source, or clear its override."""
    target = _target(flags, request.target)
    if isinstance(target, Refusal):
        return target
    if target == OVERRIDE_TARGET:
        if name not in flags:
            return Refusal(kind="not_found", message=f"no flag {name!r}")
        old = _spec(flags.get(name))
        cleared = flags.clear(name)
        change = Change(name=name, action="clear", target=OVERRIDE_TARGET, revision=None,
                        old=old, new=_spec(flags.get(name)), changed=cleared)  # fmt: skip
        return _logged(change, actor) if cleared else change
    try:
        result = flags.remove(name, actor=actor, revision=request.revision)
    except ConfigError as exc:
        return Refusal(kind="invalid", message=str(exc))
    except FlagConflictError as exc:
        return _conflict(flags, name, exc)
    except FlagStoreError as exc:
        return Refusal(kind="unavailable", message=str(exc))
    if result is None:
        writable = flags.writable
        where = writable.name if writable is not None else "the writable source"
        return Refusal(kind="not_found", message=f"no flag {name!r} in {where}")
    _visible(flags, result.revision)
    change = Change(name=name, action="delete", target=result.target, revision=result.revision,
                    old=result.old, new=None)  # fmt: skip
    return _logged(change, actor)
