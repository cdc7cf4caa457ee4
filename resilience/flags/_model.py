"""The flag model: frozen, validated flags, rules and variants, and documents of them.

A flag is either a *switch* (``on``, optional ``rollout`` and ``rules``) or a *value* (``value``,
optional ``type``, ``rules`` and weighted ``variants``). Documents carry flags as in DESIGN.md::

    {"flags": {"kill-recommendations": {"on": false},
               "new-ranking": {"on": true, "rollout": 0.3,
                               "rules": [{"attr": "country", "in": ["KR", "JP"], "on": true}]},
               "ratings.timeout": {"value": 0.5}}}

A document is read flag by flag (:func:`parse_flags_lenient`): one invalid flag is reported and
never costs the valid ones beside it. How flags evaluate is in ``_evaluate``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = [
    "OPERATORS",
    "TYPES",
    "Flag",
    "Rule",
    "Variant",
    "check_type",
    "document_flags",
    "flag_from_value",
    "parse_document",
    "parse_flags",
    "parse_flags_lenient",
    "parse_one",
    "type_of",
]

OPERATORS = ("in", "not_in", "eq", "ne", "lt", "lte", "gt", "gte", "regex")
TYPES = ("bool", "int", "float", "str", "json")
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "json": (dict, list),
}
_FLAG_KEYS = frozenset({"on", "rollout", "rules", "value", "type", "variants", "description"})


def type_of(value: Any) -> str:
    """The flag type name of a JSON value (``ConfigError`` for anything else)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ConfigError("value", f"must be finite, got {value!r}")
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (dict, list)):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError("value", f"is not JSON: {exc}") from exc
        return "json"
    raise ConfigError(
        "value", f"must be a bool, int, float, str or JSON object/list, got {value!r}"
    )


def check_type(value: Any, type_name: str) -> bool:
    """Whether ``value`` is acceptable for a flag of type ``type_name`` (an int is a float)."""
    if type_name != "bool" and isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES[type_name])


def _field(name: str, *parts: str) -> str:
    return ".".join(("flags", name, *map(str, parts)))


@attrs.frozen(kw_only=True)
class Rule:
    """A targeting rule: ``attrs[attr] <op> operand`` gives ``on`` or a ``value``/``variant``.

    Operators: ``in``/``not_in`` (a list), ``eq``/``ne``, ``lt``/``lte``/``gt``/``gte`` (numbers),
    ``regex`` (``re.search`` on the attribute as a string). A missing attribute matches no rule.
    """

    attr: str
    op: str
    operand: Any
    on: bool | None = None
    value: Any = None
    variant: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.attr, str) or not self.attr:
            raise ConfigError("attr", f"must be a non-empty string, got {self.attr!r}")
        if self.op not in OPERATORS:
            raise ConfigError("op", f"must be one of {', '.join(OPERATORS)}, got {self.op!r}")
        if self.op in ("in", "not_in") and not isinstance(self.operand, (list, tuple)):
            raise ConfigError(self.op, f"must be a list, got {self.operand!r}")
        if self.op in ("lt", "lte", "gt", "gte") and (
            isinstance(self.operand, bool) or not isinstance(self.operand, (int, float))
        ):
            raise ConfigError(self.op, f"must be a number, got {self.operand!r}")
        if self.op == "regex":
            if not isinstance(self.operand, str):
                raise ConfigError("regex", f"must be a string, got {self.operand!r}")
            try:
                re.compile(self.operand)
            except re.error as exc:
                raise ConfigError("regex", f"invalid pattern: {exc}") from exc
        if self.on is not None and not isinstance(self.on, bool):
            raise ConfigError("on", f"must be true or false, got {self.on!r}")
        if self.variant is not None and not isinstance(self.variant, str):
            raise ConfigError("variant", f"must be a string, got {self.variant!r}")

    @classmethod
    def from_dict(cls, spec: Any) -> Rule:
        if not isinstance(spec, Mapping):
            raise ConfigError("rule", f"must be an object, got {spec!r}")
        ops = [op for op in OPERATORS if op in spec]
        if len(ops) != 1:
            raise ConfigError("rule", f"needs exactly one operator of {', '.join(OPERATORS)}")
        unknown = set(spec) - {"attr", "on", "value", "variant", *ops}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "is not a rule field")
        operand = spec[ops[0]]
        if isinstance(operand, list):
            operand = tuple(operand)
        return cls(
            attr=spec.get("attr", ""),
            op=ops[0],
            operand=operand,
            on=spec.get("on"),
            value=spec.get("value"),
            variant=spec.get("variant"),
        )

    def to_dict(self) -> dict[str, Any]:
        operand = list(self.operand) if isinstance(self.operand, tuple) else self.operand
        out: dict[str, Any] = {"attr": self.attr, self.op: operand}
        for name in ("on", "value", "variant"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def predicate(self) -> Callable[[Mapping[str, Any]], bool]:
        """The rule's test, compiled once per flag update."""
        attr, op, operand = self.attr, self.op, self.operand
        missing = object()
        if op in ("in", "not_in"):
            try:
                members: Any = frozenset(operand)
            except TypeError:  # unhashable members (lists): fall back to a tuple scan
                members = tuple(operand)
            inside = op == "in"

            def test_in(a: Mapping[str, Any]) -> bool:
                v = a.get(attr, missing)
                if v is missing:
                    return False
                try:
                    return (v in members) is inside
                except TypeError:
                    return not inside

            return test_in
        if op == "regex":
            search = re.compile(operand).search
            return lambda a: attr in a and search(str(a[attr])) is not None
        if op in ("eq", "ne"):
            equal = op == "eq"
            return lambda a: attr in a and (a[attr] == operand) is equal
        compare: Callable[[Any, Any], bool] = {
            "lt": lambda x, y: x < y,
            "lte": lambda x, y: x <= y,
            "gt": lambda x, y: x > y,
            "gte": lambda x, y: x >= y,
        }[op]

        def test_number(a: Mapping[str, Any]) -> bool:
            v = a.get(attr, missing)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            return compare(v, operand)

        return test_number


@attrs.frozen(kw_only=True)
class Variant:
    """One arm of a weighted split of a value flag."""

    name: str
    weight: float
    value: Any

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf:
            raise ConfigError("weight", f"must be a number >= 0, got {w!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "value": self.value}


@attrs.frozen(kw_only=True)
class Flag:
    """One flag, validated at construction (``ConfigError`` names the field).

    Args:
        on: a switch's state; ``False`` turns it off for everyone (a kill switch).
        rollout: fraction (0..1) of keys a switch is on for, by sticky bucket.
        rules: targeting rules, first match wins.
        value / type: a typed value flag; ``type`` (bool, int, float, str, json) defaults to
            the type of ``value`` and every value the flag can give must have it.
        variants: weighted values a key is split between (value flags).
    """

    name: str
    on: bool | None = None
    rollout: float | None = None
    rules: tuple[Rule, ...] = ()
    value: Any = None
    type: str | None = None
    variants: tuple[Variant, ...] = ()
    description: str = ""

    def __attrs_post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError("name", f"must be a non-empty string without blanks, got {name!r}")
        if self.on is not None and not isinstance(self.on, bool):
            raise ConfigError(_field(name, "on"), f"must be true or false, got {self.on!r}")
        is_value = self.value is not None or bool(self.variants) or self.type is not None
        if is_value and self.on is not None:
            raise ConfigError(_field(name, "on"), "a flag is a switch (on) or a value, not both")
        if not is_value and self.on is None:
            raise ConfigError(_field(name), "needs 'on' (a switch) or 'value'/'variants'")
        if self.rollout is not None:
            r = self.rollout
            if is_value:
                raise ConfigError(_field(name, "rollout"), "applies to switches; use variants")
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
                raise ConfigError(_field(name, "rollout"), f"must be in 0..1, got {r!r}")
        if not isinstance(self.description, str):
            raise ConfigError(_field(name, "description"), "must be a string")
        if not is_value:
            for i, rule in enumerate(self.rules):
                if rule.value is not None or rule.variant is not None:
                    raise ConfigError(
                        _field(name, f"rules[{i}]"), "a switch's rule gives 'on', not a value"
                    )
            return
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(_field(name, "variants"), "variant names must be unique")
        if self.variants and sum(v.weight for v in self.variants) <= 0:
            raise ConfigError(_field(name, "variants"), "weights must add up to more than 0")
        type_name = self.type
        if type_name is None:
            first = self.value if self.value is not None else self.variants[0].value
            try:
                type_name = type_of(first)
            except ConfigError as exc:
                raise ConfigError(_field(name, "value"), exc.message) from exc
            object.__setattr__(self, "type", type_name)
        elif type_name not in TYPES:
            raise ConfigError(_field(name, "type"), f"must be one of {', '.join(TYPES)}")
        for where, v in self.possible_values():
            if v is None:
                raise ConfigError(_field(name, where), "a value flag needs a value here")
            try:
                type_of(v)
            except ConfigError as exc:
                raise ConfigError(_field(name, where), exc.message) from exc
            if not check_type(v, type_name):
                raise ConfigError(_field(name, where), f"must be of type {type_name}, got {v!r}")
        for i, rule in enumerate(self.rules):
            if rule.on is not None:
                raise ConfigError(_field(name, f"rules[{i}]", "on"), "a value's rule gives a value")
            if rule.variant is not None and rule.variant not in names:
                raise ConfigError(
                    _field(name, f"rules[{i}]", "variant"), f"no variant {rule.variant!r}"
                )

    @property
    def kind(self) -> str:
        """``"switch"`` or ``"value"``."""
        return "switch" if self.on is not None else "value"

    def possible_values(self) -> list[tuple[str, Any]]:
        """Every (where, value) a value flag can give, for validation."""
        if self.kind == "switch":
            return [("on", self.on)] + [
                (f"rules[{i}].on", True if r.on is None else r.on) for i, r in enumerate(self.rules)
            ]
        out: list[tuple[str, Any]] = []
        if self.value is not None or not self.variants:
            out.append(("value", self.value))
        out += [(f"variants[{i}].value", v.value) for i, v in enumerate(self.variants)]
        out += [
            (f"rules[{i}].value", r.value) for i, r in enumerate(self.rules) if r.variant is None
        ]
        return out

    @classmethod
    def from_dict(cls, name: str, spec: Any) -> Flag:
        """Parse one flag of a document; ``ConfigError`` names ``flags.<name>.<field>``."""
        if not isinstance(spec, Mapping):
            raise ConfigError(_field(name), f"must be an object, got {spec!r}")
        unknown = set(spec) - _FLAG_KEYS
        if unknown:
            raise ConfigError(_field(name, sorted(unknown)[0]), "is not a flag field")
        rules_spec = spec.get("rules", [])
        variants_spec = spec.get("variants", [])
        if not isinstance(rules_spec, list):
            raise ConfigError(_field(name, "rules"), "must be a list")
        if not isinstance(variants_spec, list):
            raise ConfigError(_field(name, "variants"), "must be a list")
        rules = []
        for i, r in enumerate(rules_spec):
            try:
                rules.append(Rule.from_dict(r))
            except ConfigError as exc:
                raise ConfigError(_field(name, f"rules[{i}]", exc.field), exc.message) from exc
        variants = []
        for i, v in enumerate(variants_spec):
            if not isinstance(v, Mapping) or set(v) - {"name", "weight", "value"}:
                raise ConfigError(_field(name, f"variants[{i}]"), "needs name, weight, value")
            try:
                variants.append(
                    Variant(name=v.get("name", ""), weight=v.get("weight", 1), value=v.get("value"))
                )
            except ConfigError as exc:
                raise ConfigError(_field(name, f"variants[{i}]", exc.field), exc.message) from exc
        return cls(
            name=name,
            on=spec.get("on"),
            rollout=spec.get("rollout"),
            rules=tuple(rules),
            value=spec.get("value"),
            type=spec.get("type"),
            variants=tuple(variants),
            description=spec.get("description", ""),
        )

    def to_dict(self) -> dict[str, Any]:
        """The flag as it would appear in a document (JSON-able)."""
        out: dict[str, Any] = {}
        if self.on is not None:
            out["on"] = self.on
        if self.rollout is not None:
            out["rollout"] = self.rollout
        if self.value is not None:
            out["value"] = self.value
        if self.kind == "value":
            out["type"] = self.type
        if self.variants:
            out["variants"] = [v.to_dict() for v in self.variants]
        if self.rules:
            out["rules"] = [r.to_dict() for r in self.rules]
        if self.description:
            out["description"] = self.description
        return out


def _check_tree(tree: Any) -> Mapping[str, Any]:
    if not isinstance(tree, Mapping):
        raise ConfigError("flags", f"must be an object of flags, got {type(tree).__name__}")
    for name in tree:
        if not isinstance(name, str):
            raise ConfigError("flags", f"flag names must be strings, got {name!r}")
    return tree


def parse_one(name: str, spec: Any) -> Flag:
    """One flag; any failure (deep nesting included) is a ``ConfigError`` naming the flag."""
    try:
        return Flag.from_dict(name, spec)
    except ConfigError:
        raise
    except (RecursionError, ValueError, TypeError) as exc:
        raise ConfigError(_field(name), f"cannot be read: {type(exc).__name__}") from exc


def parse_flags(tree: Any) -> dict[str, Flag]:
    """A ``{name: spec}`` mapping into flags; ``ConfigError`` on the first invalid one."""
    return {name: parse_one(name, spec) for name, spec in _check_tree(tree).items()}


def parse_flags_lenient(tree: Any) -> tuple[dict[str, Flag], dict[str, ConfigError]]:
    """A ``{name: spec}`` mapping into (valid flags, errors of the invalid ones by name).

    ``ConfigError`` only when the mapping itself is not one of flags.
    """
    good: dict[str, Flag] = {}
    bad: dict[str, ConfigError] = {}
    for name, spec in _check_tree(tree).items():
        try:
            good[name] = parse_one(name, spec)
        except ConfigError as exc:
            bad[name] = exc
    return good, bad


def document_flags(tree: Any) -> Any:
    """The ``{name: spec}`` mapping of a whole document (``{"flags": {...}}``)."""
    if not isinstance(tree, Mapping) or set(tree) - {"flags"}:
        raise ConfigError("document", "must be an object whose only key is 'flags'")
    return tree.get("flags", {})


def parse_document(tree: Any) -> dict[str, Flag]:
    """A whole flag document (``{"flags": {...}}``) into flags; strict (first error raises)."""
    return parse_flags(document_flags(tree))


def flag_from_value(name: str, value: Any, current: Flag | None) -> Flag:
    """The flag that setting ``name`` to ``value`` gives, keeping ``current``'s kind and type.

    A bool on a switch turns it on/off for everyone; a value flag keeps its type (an int is a
    float); an unknown name becomes a switch (bool) or a value flag typed by ``value``.
    """
    if current is not None and current.kind == "switch":
        if not isinstance(value, bool):
            raise ConfigError(name, f"is a switch: the value must be true or false, got {value!r}")
        return Flag(name=name, on=value)
    if current is not None:
        assert current.type is not None
        if value is None or not check_type(value, current.type):
            raise ConfigError(name, f"must be of type {current.type}, got {value!r}")
        return Flag(name=name, value=value, type=current.type)
    if isinstance(value, bool):
        return Flag(name=name, on=value)
    return Flag(name=name, value=value, type=type_of(value))
