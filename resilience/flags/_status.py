"""What ``Flags.status()`` shows and what Prometheus scrapes, read from the store's own state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..metrics import (
    FLAG_EVALUATIONS,
    FLAG_LAST_SUCCESS,
    FLAG_LAST_UPDATE,
    FLAG_SOURCE_ERRORS,
    counter,
    gauge,
)
from ._evaluate import REASONS, Compiled
from ._fleet import FleetWrites as Flags
from ._store import OVERRIDE, SourceState

__all__ = ["collect_metrics", "describe", "status"]


def describe(c: Compiled) -> dict[str, Any]:
    """One flag as the status shows it."""
    return {
        "kind": c.flag.kind,
        "type": c.type,
        "source": c.source,
        "version": c.version,
        "overridden": c.source == OVERRIDE,
        "static": c.static,
        "value": c.value if c.static else None,
        "spec": c.flag.to_dict(),
        "evaluations": {r.value: n for r, n in zip(REASONS, c.stats, strict=True) if n},
    }


def _source(st: SourceState) -> dict[str, Any]:
    try:
        extra = st.source.status()
    except Exception as exc:  # a status page must not fail for one source's report
        extra = {"status_error": type(exc).__name__}
    return {
        "name": st.source.name,
        "kind": type(st.source).__name__,
        "health": st.health().value,
        "writable": st.source.writable,
        "updates": st.updates,
        "last_update": st.last_update,
        "last_success": st.last_success,
        "stale": st.stale,
        "errors": dict(st.errors),
        "last_error": st.last_error,
        "last_error_time": st.last_error_time,
        "flag_errors": dict(st.flag_errors),
        **extra,
    }


def status(flags: Flags) -> dict[str, Any]:
    """A JSON-able picture: flags in force, their sources, sources' health, bindings."""
    table = flags._table
    listed = {name: describe(table[name]) for name in sorted(table)}
    with flags._lock:
        sources = [_source(st) for st in flags._states]
    writable = flags.writable
    return {
        "flags": listed,
        "sources": sources,
        "health": flags.health().value,
        "writes_to": None if writable is None else writable.name,
        "overrides": sorted(flags._overrides),
        "unknown": dict(flags._unknown),
        "bindings": [b.status() for b in flags.bindings],
    }


def collect_metrics(flags: Flags) -> Iterator[Any]:
    """Prometheus families, built at scrape time from the flags' own counters."""
    evaluations = counter(FLAG_EVALUATIONS, "Flag evaluations by reason.", ["flag", "reason"])
    for name, stats in sorted(flags._stats.items()):
        for reason, n in zip(REASONS, stats, strict=True):
            if n:
                evaluations.add_metric([name, reason.value], n)
    for name, n in sorted(flags._unknown.items()):
        evaluations.add_metric([name, "error"], n)
    errors = counter(FLAG_SOURCE_ERRORS, "Failed or rejected source updates.", ["source", "kind"])
    last = gauge(FLAG_LAST_UPDATE, "Wall time of the last update that changed a flag.", ["source"])
    success = gauge(
        FLAG_LAST_SUCCESS,
        "Wall time of the last good check of the source, changed or not.",
        ["source"],
    )
    for st in flags._states:
        for kind, n in sorted(st.errors.items()):
            errors.add_metric([st.source.name, kind], n)
        if st.last_update is not None:
            last.add_metric([st.source.name], st.last_update)
        if st.last_success is not None:
            success.add_metric([st.source.name], st.last_success)
    for binding in flags.bindings:
        if binding.rejected:
            errors.add_metric([f"circuit:{binding.dependency.name}", "rejected"], binding.rejected)
    yield from (evaluations, errors, last, success)
