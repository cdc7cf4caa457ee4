"""Validators and converters shared by the recipe classes, and exception-name resolution."""

from __future__ import annotations

import builtins
import contextvars
import importlib
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from .. import errors
from ..errors import ConfigError, FaultInjectedError

__all__ = ["TOXIC_TYPES", "resolve_error"]

# Toxiproxy toxic types a recipe may name; "down" disables the proxy instead of adding a toxic.
TOXIC_TYPES = frozenset(
    {"latency", "bandwidth", "slow_close", "timeout", "reset_peer", "limit_data", "slicer", "down"}
)
_NAME = re.compile(r"^[A-Za-z0-9_.:*?\[\]-]{1,200}$")
_ERROR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _fail(field: str, message: str) -> ConfigError:
    return ConfigError(field, message)


# Whether resolving an exception name may import its module. Recipes a person loads (files, the
# Python API) may; recipes that arrive inside a request tag may not: a tag must never make a
# service import code, so there a name resolves only against modules already imported.
_IMPORTS: contextvars.ContextVar[bool] = contextvars.ContextVar("fit_imports", default=True)


def resolve_error(name: str | bool | None, *, imports: bool = True) -> type[Exception]:
    """The exception class a fault raises; ``True``/``None`` mean ``FaultInjectedError``.

    A name is a builtin (``ConnectionError``), a ``resilience.errors`` name, or a dotted path
    (``aiohttp.ClientConnectionError``); the class must take a single message argument, since
    the fault raises it with one. Raises ``ConfigError`` (field ``error``) for anything else,
    so a typo never silently tests another code path.
    """
    if not isinstance(name, str):
        return FaultInjectedError
    found: Any = getattr(builtins, name, None) or getattr(errors, name, None)
    if found is None and "." in name:
        module_name, _, attr = name.rpartition(".")
        module = sys.modules.get(module_name)
        if module is None and imports:
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # ImportError, or the module failed while importing
                raise _fail("error", f"cannot import {module_name!r} for {name!r}: {exc}") from exc
        if module is None:
            raise _fail("error", f"{name!r}: module {module_name!r} is not imported here")
        found = getattr(module, attr, None)
    if found is None:
        raise _fail(
            "error",
            f"unknown exception {name!r}: name a builtin (ConnectionError), a resilience.errors "
            "class, or a dotted import path (aiohttp.ClientConnectionError)",
        )
    if not (isinstance(found, type) and issubclass(found, Exception)):
        raise _fail("error", f"{name!r} is not an exception class")
    try:
        found("fault injected")
    except Exception as exc:
        raise _fail(
            "error",
            f"{name!r} cannot be raised with a single message ({exc}); name a class that can",
        ) from exc
    return found


def _seconds(*, allow_none: bool = False, positive: bool = False) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(attribute.name, f"must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise _fail(attribute.name, f"must be a finite number {'>' if positive else '>='} 0")

    return check


def _fraction(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _fail(attribute.name, f"must be a fraction in 0..1, got {value!r}")


def _key(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(attribute.name, f"must be a dependency key or glob, got {value!r}")


def _keys(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple):
        raise _fail(attribute.name, f"must be a list of dependency keys, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not _NAME.match(item):
            raise _fail(attribute.name, f"must list dependency keys or globs, got {item!r}")


def _status(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _status_list(value: Any) -> Any:
    """``status: 200`` means ``[200]``: one accepted status needs no list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    return _tuple(value)


def _statuses(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not value or not all(_status(v) for v in value):
        shown = list(value) if isinstance(value, tuple) else value
        raise _fail(
            attribute.name, f"must be an HTTP status 100..599 or a list of them, got {shown!r}"
        )


def _paths(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, Mapping):
        value = list(value)
    for path in value:
        if not isinstance(path, str) or not path:
            raise _fail(attribute.name, f"keys must be dotted JSON paths, got {path!r}")


def _address(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not re.match(r"^\[?[A-Za-z0-9_.:-]+\]?:[0-9]{1,5}$", value):
        raise _fail(attribute.name, f"must be host:port, got {value!r}")


def _toxic_type(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in TOXIC_TYPES:
        raise _fail(attribute.name, f"must be one of {sorted(TOXIC_TYPES)}, got {value!r}")


def _stream(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("downstream", "upstream"):
        raise _fail(attribute.name, f"must be 'downstream' or 'upstream', got {value!r}")


def _attributes(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _fail(attribute.name, f"must be a mapping, got {value!r}")
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
            raise _fail(f"{attribute.name}.{name}", f"must be a number >= 0, got {number!r}")


def _text(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise _fail(attribute.name, f"must be a string, got {value!r}")


def _name(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9_.-]{1,100}$", value):
        raise _fail(attribute.name, f"must be 1..100 of [A-Za-z0-9_.-], got {value!r}")


def _flag(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(attribute.name, f"must be true or false, got {value!r}")
