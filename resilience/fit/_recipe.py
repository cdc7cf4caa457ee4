"""Recipes: the failure scenario a synthetic request carries, as frozen, validated values.

A recipe is read from YAML or JSON (``Recipe.load``) or a dict (``Recipe.from_dict``). Every
invalid value raises :class:`~resilience.errors.RecipeError` naming its path in the recipe
(``faults[1].probability``) and, when read from text, its line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ..errors import ConfigError, RecipeError
from ._checks import (
    _ERROR_NAME,
    _IMPORTS,
    TOXIC_TYPES,
    _address,
    _attributes,
    _fail,
    _flag,
    _fraction,
    _key,
    _keys,
    _name,
    _paths,
    _seconds,
    _status,
    _status_list,
    _statuses,
    _stream,
    _text,
    _toxic_type,
    _tuple,
    resolve_error,
)

__all__ = [
    "TOXIC_TYPES",
    "Expectation",
    "FaultSpec",
    "ProxySpec",
    "Recipe",
    "ToxicSpec",
    "resolve_error",
]

FaultKind = Literal["error", "status", "latency", "timeout"]

DEFAULT_PROBABILITY = 1.0
DEFAULT_ERROR_BUDGET = 0.0
DEFAULT_STATUS = (200,)


@attrs.frozen(kw_only=True)
class FaultSpec:
    """One fault: what a call to a matching dependency does instead of its work.

    Args:
        dependency: a dependency key or a glob (``ratings``, ``cache.profile.*``).
        error: the exception to raise: ``True`` for ``FaultInjectedError``, or a class name
            (a builtin such as ``ConnectionError``, a ``resilience.errors`` name, or a dotted
            import path such as ``aiohttp.ClientConnectionError``) that must resolve to an
            exception class taking one message, or the recipe is invalid.
        status: an HTTP status: the call raises ``FaultInjectedError`` carrying it.
        latency: seconds to wait before running the call; ``jitter`` adds up to that much more.
        timeout: the call hangs past the dependency's timeout, so the real timeout path fires.
        probability: the chance that a matching call gets the fault.
    """

    dependency: str = attrs.field(validator=_key)
    error: str | bool | None = None
    status: int | None = None
    latency: float | None = attrs.field(default=None, validator=_seconds(allow_none=True))
    jitter: float = attrs.field(default=0.0, validator=_seconds())
    timeout: bool = False
    probability: float = attrs.field(default=DEFAULT_PROBABILITY, validator=_fraction)

    def __attrs_post_init__(self) -> None:
        kinds = [
            name
            for name, given in (
                ("error", self.error not in (None, False)),
                ("status", self.status is not None),
                ("latency", self.latency is not None),
                ("timeout", self.timeout is not False),
            )
            if given
        ]
        if len(kinds) != 1:
            raise _fail("error", "give exactly one of error, status, latency, timeout")
        if isinstance(self.error, str) and not _ERROR_NAME.match(self.error):
            raise _fail("error", f"must be an exception class name, got {self.error!r}")
        if self.error is not None and not isinstance(self.error, (str, bool)):
            raise _fail("error", f"must be true or an exception class name, got {self.error!r}")
        if isinstance(self.error, str):
            resolve_error(self.error, imports=_IMPORTS.get())
        if self.status is not None and not _status(self.status):
            raise _fail("status", f"must be an HTTP status 100..599, got {self.status!r}")
        if not isinstance(self.timeout, bool):
            raise _fail("timeout", f"must be true or false, got {self.timeout!r}")

    @property
    def kind(self) -> FaultKind:
        if self.status is not None:
            return "status"
        if self.latency is not None:
            return "latency"
        if self.timeout:
            return "timeout"
        return "error"


@attrs.frozen(kw_only=True)
class Expectation:
    """What the runner checks on every tagged response.

    Args:
        status: the statuses that count as an answer.
        max_latency: seconds a response may take, or None.
        json: dotted paths into the JSON body and the value each must equal
            (``{"items.0.id": 3}``); list indexes are numbers in the path.
        json_present: dotted paths that must exist in the JSON body.
    """

    status: tuple[int, ...] = attrs.field(
        default=DEFAULT_STATUS, converter=_status_list, validator=_statuses
    )
    max_latency: float | None = attrs.field(
        default=None, validator=_seconds(allow_none=True, positive=True)
    )
    json: Mapping[str, Any] = attrs.field(factory=dict, validator=_paths)
    json_present: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_paths)


@attrs.frozen(kw_only=True)
class ProxySpec:
    """A Toxiproxy proxy the runner creates if missing (and deletes after the run)."""

    name: str = attrs.field(validator=_key)
    listen: str = attrs.field(validator=_address)
    upstream: str = attrs.field(validator=_address)


@attrs.frozen(kw_only=True)
class ToxicSpec:
    """A Toxiproxy toxic (attributes as Toxiproxy names them, e.g. ``latency`` in ms)."""

    proxy: str = attrs.field(validator=_key)
    type: str = attrs.field(validator=_toxic_type)
    stream: str = attrs.field(default="downstream", validator=_stream)
    toxicity: float = attrs.field(default=1.0, validator=_fraction)
    attributes: Mapping[str, float] = attrs.field(factory=dict, validator=_attributes)
    name: str | None = None

    @property
    def toxic_name(self) -> str:
        return self.name if self.name is not None else f"fit_{self.type}_{self.stream}"


@attrs.frozen(kw_only=True)
class Recipe:
    """A failure scenario: faults per dependency, the critical path, and what the runner checks.

    Args:
        name: identifies the recipe in tags, errors and reports.
        faults: faults in order; the first whose dependency pattern matches a call decides.
        critical: dependency keys or globs the request cannot live without.
        isolate_critical: fail every dependency not in ``critical`` (and with no fault of its
            own) with ``FaultInjectedError``, to prove the request works on its critical path.
        expect: checked by the runner on every tagged response.
        error_budget: the fraction of tagged requests that may break an expectation; the runner
            stops early once more have broken than the budget allows.
        proxies / toxics: Toxiproxy setup applied for the run and removed after it.
    """

    name: str = attrs.field(validator=_name)
    faults: tuple[FaultSpec, ...] = attrs.field(default=(), converter=_tuple)
    critical: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_keys)
    isolate_critical: bool = attrs.field(default=False, validator=_flag)
    expect: Expectation = attrs.field(factory=Expectation)
    error_budget: float = attrs.field(default=DEFAULT_ERROR_BUDGET, validator=_fraction)
    proxies: tuple[ProxySpec, ...] = attrs.field(default=(), converter=_tuple)
    toxics: tuple[ToxicSpec, ...] = attrs.field(default=(), converter=_tuple)
    description: str = attrs.field(default="", validator=_text)

    @classmethod
    def from_dict(cls, data: Any, *, imports: bool = True) -> Recipe:
        """Build and validate a recipe from its dict form.

        Args:
            imports: whether a dotted exception name may import its module; tag verification
                passes False, so a tag never makes a service import code.
        """
        return _build(data, {}, imports)

    @classmethod
    def loads(cls, text: str) -> Recipe:
        """Parse a recipe from YAML or JSON text; errors carry the line of the bad value."""
        data, lines = _parse(text)
        return _build(data, lines, True)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe file (``.yaml``, ``.yml`` or ``.json``)."""
        return cls.loads(Path(path).read_text(encoding="utf-8"))

    def to_dict(self) -> dict[str, Any]:
        """The dict form, without default values (what tags carry and files hold)."""
        return _prune(attrs.asdict(self, recurse=True), self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _defaults(cls: type) -> dict[str, Any]:
    found = _DEFAULTS.get(cls)
    if found is None:
        found = {}
        for a in attrs.fields(cls):
            factory = getattr(a.default, "factory", None)  # an attrs.Factory
            if callable(factory):
                found[a.name] = factory()
            elif a.default is not attrs.NOTHING:
                found[a.name] = a.default
        _DEFAULTS[cls] = found
    return found


def _prune(data: dict[str, Any], obj: Any) -> dict[str, Any]:
    defaults = _defaults(type(obj))
    out: dict[str, Any] = {}
    for key, value in data.items():
        child = getattr(obj, key)
        if attrs.has(type(child)):
            value = _prune(value, child)
        elif isinstance(child, tuple) and child and attrs.has(type(child[0])):
            value = [_prune(v, c) for v, c in zip(value, child, strict=True)]
        elif isinstance(value, tuple):
            value = list(value)
        if key in defaults:
            default = defaults[key]
            same = (
                value == default
                or (isinstance(default, tuple) and list(default) == value)
                or (attrs.has(type(child)) and value == {})
            )
            if same:
                continue
        out[key] = value
    return out


# -- parsing with line numbers -------------------------------------------------------------

Lines = dict[tuple[Any, ...], int]


def _parse(text: str) -> tuple[Any, Lines]:
    try:
        import yaml
    except ImportError:  # PyYAML is optional: JSON still loads, without line numbers
        try:
            return json.loads(text), {}
        except json.JSONDecodeError as exc:
            raise RecipeError("recipe", f"not valid JSON: {exc.msg}", exc.lineno) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RecipeError("recipe", f"not valid YAML or JSON: {exc}", line) from exc
    lines: Lines = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def _walk(node: Any, path: tuple[Any, ...], lines: Lines) -> None:
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[(*path, key.value)] = key.start_mark.line + 1
            _walk(value, (*path, key.value), lines)
            lines[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "recipe"


def _line(lines: Lines, path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _make(cls: type[Any], data: Any, path: tuple[Any, ...], lines: Lines, **nested: Any) -> Any:
    """``cls(**data)`` with errors re-raised naming the field's path and line."""
    if not isinstance(data, Mapping):
        raise RecipeError(_dotted(path), f"must be a mapping, got {data!r}", _line(lines, path))
    known = {a.name for a in attrs.fields(cls)}
    for key in data:
        if key not in known:
            where = (*path, key)
            raise RecipeError(_dotted(where), "unknown field", _line(lines, where))
    for field in attrs.fields(cls):
        if field.default is attrs.NOTHING and field.name not in data and field.name not in nested:
            raise RecipeError(_dotted((*path, field.name)), "is required", _line(lines, path))
    try:
        return cls(**{**data, **nested})
    except ConfigError as exc:
        where = (*path, *exc.field.split("."))
        raise RecipeError(_dotted(where), exc.message, _line(lines, where)) from None
    except TypeError as exc:  # a required field is missing
        raise RecipeError(_dotted(path), str(exc), _line(lines, path)) from None


def _items(data: Any, key: str, lines: Lines) -> list[Any]:
    value = data.get(key, []) if isinstance(data, Mapping) else []
    if not isinstance(value, list):
        raise RecipeError(key, f"must be a list, got {value!r}", _line(lines, (key,)))
    return value


def _build(data: Any, lines: Lines, imports: bool) -> Recipe:
    token = _IMPORTS.set(imports)
    try:
        return _build_recipe(data, lines)
    finally:
        _IMPORTS.reset(token)


def _build_recipe(data: Any, lines: Lines) -> Recipe:
    if not isinstance(data, Mapping):
        raise RecipeError(
            "recipe", f"must be a mapping, got {type(data).__name__}", _line(lines, ())
        )
    nested: dict[str, Any] = {
        "faults": tuple(
            _make(FaultSpec, f, ("faults", i), lines)
            for i, f in enumerate(_items(data, "faults", lines))
        ),
        "proxies": tuple(
            _make(ProxySpec, p, ("proxies", i), lines)
            for i, p in enumerate(_items(data, "proxies", lines))
        ),
        "toxics": tuple(
            _make(ToxicSpec, t, ("toxics", i), lines)
            for i, t in enumerate(_items(data, "toxics", lines))
        ),
    }
    if "expect" in data:
        nested["expect"] = _make(Expectation, data["expect"], ("expect",), lines)
    recipe: Recipe = _make(Recipe, data, (), lines, **nested)
    return recipe
