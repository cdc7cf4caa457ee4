"""Validators shared by the load-control configs (rate limit, adaptive limit, budgets, hedge,
collapse): each raises ``ConfigError`` naming the field, so a bad value fails at construction."""

from __future__ import annotations

import math
from typing import Any

import attrs

from ..errors import ConfigError

__all__ = ["check_count", "check_number", "check_seconds", "count", "number", "seconds"]


def _real(name: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be {what}, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(name, f"must be finite, got {value!r}")
    return float(value)


def check_number(name: str, value: Any, *, low: float, high: float | None = None) -> None:
    """``value`` is a finite real number in ``low..high`` (both included)."""
    number = _real(name, value, "a number")
    if number < low or (high is not None and number > high):
        bounds = f">= {low:g}" if high is None else f"in {low:g}..{high:g}"
        raise ConfigError(name, f"must be {bounds}, got {value!r}")


def check_seconds(name: str, value: Any, *, positive: bool) -> None:
    """``value`` is a finite duration in seconds, > 0 if ``positive`` else >= 0."""
    number = _real(name, value, "a number of seconds")
    if positive and number <= 0:
        raise ConfigError(name, f"must be > 0, got {value!r}")
    if number < 0:
        raise ConfigError(name, f"must be >= 0, got {value!r}")


def check_count(name: str, value: Any, *, low: int, high: int | None = None) -> None:
    """``value`` is an integer (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(name, f"must be {bounds}, got {value!r}")


def seconds(*, positive: bool) -> Any:
    """An attrs validator for a duration field."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_seconds(attribute.name, value, positive=positive)

    return check


def number(*, low: float, high: float | None = None) -> Any:
    """An attrs validator for a bounded real number field."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_number(attribute.name, value, low=low, high=high)

    return check


def count(*, low: int, high: int | None = None) -> Any:
    """An attrs validator for a bounded integer field."""

    def check(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_count(attribute.name, value, low=low, high=high)

    return check
