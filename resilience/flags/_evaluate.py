"""Evaluation: a flag compiled once per update, then evaluated per call without IO or locks.

Evaluation order of a switch: ``on: false`` wins (reason ``disabled``); then the rules, first
match wins (``targeting_match``); then the rollout, if any (``split``); a switch with rules and
no rollout that no rule matched is on by default (``default``); a plain switch is ``static``.
A value flag: rules, then variants (``split``), then ``value`` (``default`` when rules were
there to match, ``static`` otherwise).

Buckets are sticky: :func:`bucket` is the first 8 bytes of BLAKE2b over the UTF-8 of
``"<flag>:<key>"``, read big-endian, modulo 10,000. A rollout of ``r`` lets in the keys whose
bucket is below ``round(r * 10000)``, so raising a rollout only adds keys. Variants share the
bucket: variant ``i`` takes the buckets between the cumulative weights before and after it.
The hash never depends on the process, the platform or the Python version.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._model import Flag, type_of

__all__ = [
    "BUCKETS",
    "REASONS",
    "Compiled",
    "Details",
    "Reason",
    "bucket",
    "compile_flag",
    "evaluate",
]

BUCKETS = 10_000


class Reason(enum.StrEnum):
    """Why an evaluation returned its value (OpenFeature's reasons, lower case)."""

    STATIC = "static"
    TARGETING_MATCH = "targeting_match"
    SPLIT = "split"
    DEFAULT = "default"
    DISABLED = "disabled"
    ERROR = "error"


REASONS = tuple(Reason)
R_STATIC, R_MATCH, R_SPLIT, R_DEFAULT, R_DISABLED, R_ERROR = range(6)


def bucket(flag: str, key: str) -> int:
    """The sticky bucket (0..9999) of ``key`` for ``flag``; see the module docstring."""
    digest = hashlib.blake2b(f"{flag}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@attrs.frozen(kw_only=True)
class Details:
    """The result of one evaluation (what OpenFeature calls resolution details).

    ``source`` names the source the flag came from and ``version`` its version there (etcd's
    ``mod_revision`` of the key), when known.
    """

    flag: str
    value: Any
    reason: Reason
    variant: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    source: str | None = None
    version: int | None = None


@attrs.frozen(kw_only=True)
class Compiled:
    """A flag prepared for evaluation: what a static flag gives is computed once.

    ``switch`` is the bool a static switch gives (``None`` otherwise), so ``enabled()`` on a plain
    switch is a dict lookup and an attribute read. ``stats`` counts evaluations per reason; it is
    shared by every compilation of one flag name, so counts survive updates.
    """

    flag: Flag
    source: str
    stats: list[int]
    switch: bool | None
    static: bool
    reason: int  # the reason a static flag gives (static or disabled)
    value: Any
    type: str
    prefix: str
    rules: tuple[tuple[Callable[[Mapping[str, Any]], bool], Any, str | None], ...]
    threshold: int
    variants: tuple[tuple[int, str, Any], ...]
    version: int | None = None


def compile_flag(flag: Flag, source: str, stats: list[int], version: int | None = None) -> Compiled:
    """Prepare ``flag`` for evaluation (done on update, never per call)."""
    by_name = {v.name: v.value for v in flag.variants}
    rules = tuple(
        (
            r.predicate(),
            (True if r.on is None else r.on)
            if flag.kind == "switch"
            else (by_name[r.variant] if r.variant is not None else r.value),
            r.variant,
        )
        for r in flag.rules
    )
    variants: list[tuple[int, str, Any]] = []
    total = sum(v.weight for v in flag.variants)
    cumulative = 0.0
    for v in flag.variants:
        cumulative += v.weight
        variants.append((round(cumulative / total * BUCKETS), v.name, v.value))
    reason = R_STATIC
    if flag.kind == "switch":
        static = flag.on is False or (not rules and flag.rollout is None)
        if flag.on is False:
            reason = R_DISABLED
        value: Any = bool(flag.on)
        threshold = BUCKETS if flag.rollout is None else round(flag.rollout * BUCKETS)
        type_name = "bool"
    else:
        static = not rules and not variants
        value = flag.value
        threshold = 0
        type_name = flag.type or type_of(value)
    return Compiled(
        flag=flag,
        source=source,
        stats=stats,
        switch=value if static and type_name == "bool" else None,
        static=static,
        reason=reason,
        value=value,
        type=type_name,
        prefix=flag.name + ":",
        rules=rules,
        threshold=threshold,
        variants=tuple(variants),
        version=version,
    )


def evaluate(c: Compiled, key: Any, attrs: Mapping[str, Any] | None) -> tuple[Any, str | None, int]:
    """(value, variant, reason index) of a flag for one key and attribute set.

    Pure and non-blocking. The value is ``None`` when no value applies (reason error: a split
    needs a key).
    """
    if c.static:
        return c.value, None, c.reason
    if attrs:
        for test, outcome, variant in c.rules:
            if test(attrs):
                return outcome, variant, R_MATCH
    if c.flag.on is not None:  # a switch that is on: rollout decides
        if c.flag.rollout is None:
            return True, None, R_DEFAULT  # it has rules (else it is static) and none matched
        if key is None:
            return None, None, R_ERROR
        digest = hashlib.blake2b((c.prefix + str(key)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % BUCKETS < c.threshold, None, R_SPLIT
    if c.variants:
        if key is None:
            if c.value is not None:
                return c.value, None, R_DEFAULT
            return None, None, R_ERROR
        digest = hashlib.blake2b((c.prefix + str(key)).encode(), digest_size=8).digest()
        b = int.from_bytes(digest, "big") % BUCKETS
        for upper, name, value in c.variants:
            if b < upper:
                return value, name, R_SPLIT
        upper, name, value = c.variants[-1]
        return value, name, R_SPLIT
    return c.value, None, R_DEFAULT  # a value flag with rules, none of which matched
