"""Prometheus alert rules and a Grafana dashboard, generated from one list of watches.

A :class:`Watch` is one thing worth alerting on and its chart: the alert's condition, the series
the panel plots, and the panel's place on the dashboard. Rules and dashboard are both built from
the same list, so every rule carries the URL of the panel that shows it (an alert must point at
the chart it watches) and the two can never drift apart.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

import attrs

from .. import metrics as m
from ..circuit import Registry
from ..circuit import registry as default_registry
from ..errors import ConfigError

__all__ = [
    "ObserveConfig",
    "Watch",
    "alert_rules",
    "grafana_dashboard",
    "panel_url",
    "watches",
]

# Series the rules and panels read. Names are DESIGN.md's Prometheus contract; the families
# themselves are defined (and exported) by resilience.metrics.
CIRCUIT_STATE = m.CIRCUIT_STATE  # resilience_circuit_state{dependency, state}
FAILURE_RATIO = m.CIRCUIT_FAILURE_RATIO  # fraction 0..1 over the rolling window
CONCURRENCY_LIMIT = m.CONCURRENCY_LIMIT  # pool size, permits, or the adaptive limit
POOL_ACTIVE = m.POOL_ACTIVE  # thread-pool workers running a call (thread isolation only)
CONCURRENT_CALLS = m.CONCURRENT_CALLS  # permits in use (async and semaphore isolation)
CACHE_ZONE_UP = m.CACHE_ZONE_UP
FLAG_SOURCE_LAST_SUCCESS = m.FLAG_LAST_SUCCESS

DEFAULT_GRAFANA_URL = "http://localhost:3000"
DEFAULT_DASHBOARD_UID = "resilience"
DEFAULT_CIRCUIT_OPEN_FOR = 60.0
DEFAULT_ERROR_RATE_FOR = 120.0
DEFAULT_POOL_SATURATION = 0.9
DEFAULT_POOL_FOR = 120.0
DEFAULT_ZONE_DOWN_FOR = 60.0
DEFAULT_FLAG_STALE_AFTER = 600.0
# An error-rate alert warns at this fraction of the failure rate that trips the breaker.
DEFAULT_ERROR_RATE_OF_TRIP = 0.5
# Grafana's rule for a dashboard uid: at most 40 characters of [a-zA-Z0-9-_].
_UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
_SELECTOR = re.compile(r'^(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"[^"]*"\s*,?)*\s*$')


def _positive(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(attribute.name, f"must be a number of seconds >= 0, got {value!r}")


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attribute.name == "error_rate":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(attribute.name, f"must be a fraction in (0, 1], got {value!r}")


def _selector(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _SELECTOR.match(value):
        raise ConfigError(
            attribute.name, f'must be PromQL label matchers such as job="api", got {value!r}'
        )


def _text(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(attribute.name, f"must be a non-empty string, got {value!r}")


def _uid(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _UID.match(value):
        raise ConfigError(
            attribute.name,
            "Grafana needs a dashboard uid of 1 to 40 characters among a-z, A-Z, 0-9, '-' "
            f"and '_', got {value!r}",
        )


def _runbook(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(attribute.name, f"must be an http(s) URL or None, got {value!r}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ConfigError(attribute.name, f"unbalanced braces in {value!r}") from exc
    if not fields <= {"alert"}:
        raise ConfigError(
            attribute.name, f"the only placeholder is {{alert}}, got {sorted(fields)} in {value!r}"
        )


@attrs.frozen(kw_only=True)
class ObserveConfig:
    """What the generated alerts and dashboard need to know beyond the registry.

    Args:
        grafana_url: base URL of Grafana; panel links in the rules start with it.
        dashboard_uid: the Grafana dashboard's uid (part of every panel link).
        title: the dashboard's title.
        selector: label matchers added to every query, e.g. ``job="api"``.
        admin_url: the admin app's dashboard page, linked from each rule too (optional).
        runbook_url: the ``runbook_url`` annotation of every rule (optional); ``{alert}`` in
            it is replaced by the alert's name, e.g. ``https://wiki/runbooks#{alert}``.
        error_rate: failure rate that raises the error-rate alert; None means
            ``DEFAULT_ERROR_RATE_OF_TRIP`` times each dependency's own ``failure_rate``.
        pool_saturation: fraction of workers (or permits) busy that raises the pool alert.
        flag_stale_after: seconds without a successful flag source refresh before it is stale.
        *_for: how long a condition must hold before the alert fires (Prometheus ``for``).
    """

    grafana_url: str = attrs.field(default=DEFAULT_GRAFANA_URL, validator=_text)
    dashboard_uid: str = attrs.field(default=DEFAULT_DASHBOARD_UID, validator=_uid)
    title: str = attrs.field(default="resilience", validator=_text)
    selector: str = attrs.field(default="", validator=_selector)
    admin_url: str | None = None
    runbook_url: str | None = attrs.field(default=None, validator=_runbook)
    error_rate: float | None = attrs.field(default=None, validator=_fraction)
    pool_saturation: float = attrs.field(default=DEFAULT_POOL_SATURATION, validator=_fraction)
    flag_stale_after: float = attrs.field(default=DEFAULT_FLAG_STALE_AFTER, validator=_positive)
    circuit_open_for: float = attrs.field(default=DEFAULT_CIRCUIT_OPEN_FOR, validator=_positive)
    error_rate_for: float = attrs.field(default=DEFAULT_ERROR_RATE_FOR, validator=_positive)
    pool_for: float = attrs.field(default=DEFAULT_POOL_FOR, validator=_positive)
    zone_down_for: float = attrs.field(default=DEFAULT_ZONE_DOWN_FOR, validator=_positive)


@attrs.frozen(kw_only=True)
class Watch:
    """One alert and the panel that shows it."""

    alert: str  # Prometheus alert name
    title: str  # panel title
    condition: str  # PromQL: the alert fires while this returns series
    plots: tuple[tuple[str, str], ...]  # (PromQL, legend) pairs the panel draws
    for_seconds: float
    severity: str
    summary: str
    labels: tuple[tuple[str, str], ...] = ()
    unit: str = "short"
    threshold: float | None = None  # drawn on the panel as a red line


def _sel(config: ObserveConfig, *matchers: str, **labels: str) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels.items()]
    parts.extend(matchers)
    extra = config.selector.strip().rstrip(",")
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _duration(seconds: float) -> str:
    # Prometheus durations: whole milliseconds keep sub-second test intervals exact.
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def watches(reg: Registry | None = None, config: ObserveConfig | None = None) -> list[Watch]:
    """Every watch for the registry's dependencies, then cache zones and flag sources."""
    reg = reg if reg is not None else default_registry()
    config = config if config is not None else ObserveConfig()
    out: list[Watch] = []
    for dep in sorted(reg, key=lambda d: d.name):
        name = dep.name
        s = _sel(config, dependency=name)
        labels = (("dependency", name),)
        # Forced open is an operator's choice, not an outage: it does not page.
        opened = _sel(config, 'state=~"open|half_open"', dependency=name)
        out.append(
            Watch(
                alert="ResilienceCircuitOpen",
                title=f"{name}: circuit open",
                condition=f"max without(state) ({CIRCUIT_STATE}{opened} == 1)",
                plots=((f"{CIRCUIT_STATE}{s}", "{{state}}"),),
                for_seconds=config.circuit_open_for,
                severity="page",
                summary=f"Circuit of {name} is open: calls are short-circuited to fallbacks.",
                labels=labels,
            )
        )
        trip = dep.policy.failure_rate
        threshold = (
            config.error_rate
            if config.error_rate is not None
            else trip * DEFAULT_ERROR_RATE_OF_TRIP
        )
        out.append(
            Watch(
                alert="ResilienceErrorRate",
                title=f"{name}: failure ratio",
                condition=f"{FAILURE_RATIO}{s} >= {threshold:g}",
                plots=((f"{FAILURE_RATIO}{s}", "failure ratio"),),
                for_seconds=config.error_rate_for,
                severity="warning",
                summary=f"{name} fails {{{{ $value | humanizePercentage }}}} of calls "
                f"(alert at {threshold:.0%}, circuit trips at {trip:.0%}).",
                labels=labels,
                unit="percentunit",
                threshold=threshold,
            )
        )
        # Thread isolation reports busy pool workers, async and semaphore isolation permits in
        # use: whichever the dependency has, over the one limit it runs under.
        busy = f"({POOL_ACTIVE}{s} or {CONCURRENT_CALLS}{s}) / {CONCURRENCY_LIMIT}{s}"
        sat = config.pool_saturation
        out.append(
            Watch(
                alert="ResiliencePoolSaturated",
                title=f"{name}: bulkhead saturation",
                condition=f"{busy} >= {sat:g}",
                plots=((busy, "busy fraction"),),
                for_seconds=config.pool_for,
                severity="warning",
                summary=f"{name}'s bulkhead is {{{{ $value | humanizePercentage }}}} busy: "
                "calls will be rejected.",
                labels=labels,
                unit="percentunit",
                threshold=sat,
            )
        )
    zone = _sel(config)
    out.append(
        Watch(
            alert="ResilienceCacheZoneDown",
            title="cache zones up",
            condition=f"{CACHE_ZONE_UP}{zone} == 0",
            plots=((f"{CACHE_ZONE_UP}{zone}", "{{cache}} {{zone}}"),),
            for_seconds=config.zone_down_for,
            severity="warning",
            summary="Cache {{ $labels.cache }} zone {{ $labels.zone }} is down: "
            "reads go to other zones.",
        )
    )
    # The time of the last successful check, not of the last change: a healthy source whose
    # document did not change is not stale.
    stale = f"time() - {FLAG_SOURCE_LAST_SUCCESS}{zone}"
    out.append(
        Watch(
            alert="ResilienceFlagSourceStale",
            title="flag source: time since last successful check",
            condition=f"{stale} > {config.flag_stale_after:g}",
            plots=((stale, "{{source}}"),),
            for_seconds=0.0,
            severity="warning",
            summary="Flag source {{ $labels.source }} has not been read successfully for "
            "{{ $value | humanizeDuration }}: flags keep their last good state.",
            unit="s",
            threshold=config.flag_stale_after,
        )
    )
    return out


def panel_url(config: ObserveConfig, panel_id: int) -> str:
    """The Grafana URL that opens one panel of the generated dashboard."""
    base = config.grafana_url.rstrip("/")
    return f"{base}/d/{config.dashboard_uid}/{_slug(config.title)}?viewPanel={panel_id}"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "dashboard"


def _panel_ids(items: Iterable[Watch]) -> list[tuple[int, Watch]]:
    # Panel ids are positions in the one list both outputs read: that is the link between them.
    return [(i + 1, w) for i, w in enumerate(items)]


def alert_rules(reg: Registry | None = None, config: ObserveConfig | None = None) -> dict[str, Any]:
    """A Prometheus rule file (as a dict: dump it as YAML or JSON) with one rule per watch."""
    config = config if config is not None else ObserveConfig()
    rules = []
    for panel_id, w in _panel_ids(watches(reg, config)):
        # __dashboardUid__ and __panelId__ are how Grafana links an alert to its panel.
        annotations = {
            "summary": w.summary,
            "dashboard": panel_url(config, panel_id),
            "panel": w.title,
            "__dashboardUid__": config.dashboard_uid,
            "__panelId__": str(panel_id),
        }
        if config.runbook_url is not None:
            annotations["runbook_url"] = config.runbook_url.format(alert=w.alert)
        if config.admin_url:
            annotations["admin"] = config.admin_url
        rule: dict[str, Any] = {"alert": w.alert, "expr": w.condition}
        if w.for_seconds:
            rule["for"] = _duration(w.for_seconds)
        rule["labels"] = {"severity": w.severity, **dict(w.labels)}
        rule["annotations"] = annotations
        rules.append(rule)
    return {"groups": [{"name": "resilience", "rules": rules}]}


_PANEL_W, _PANEL_H, _PER_ROW = 8, 7, 3


def grafana_dashboard(
    reg: Registry | None = None, config: ObserveConfig | None = None
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with one time-series panel per watch."""
    config = config if config is not None else ObserveConfig()
    ds = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for panel_id, w in _panel_ids(watches(reg, config)):
        slot = panel_id - 1
        steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
        if w.threshold is not None:
            steps.append({"color": "red", "value": w.threshold})
        panels.append(
            {
                "id": panel_id,
                "type": "timeseries",
                "title": w.title,
                "description": f"Alert {w.alert}: {w.condition}",
                "datasource": ds,
                "gridPos": {
                    "x": (slot % _PER_ROW) * _PANEL_W,
                    "y": (slot // _PER_ROW) * _PANEL_H,
                    "w": _PANEL_W,
                    "h": _PANEL_H,
                },
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": ds,
                    }
                    for i, (expr, legend) in enumerate(w.plots)
                ],
                "fieldConfig": {
                    "defaults": {
                        "unit": w.unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {
                            "thresholdsStyle": {
                                "mode": "line" if w.threshold is not None else "off"
                            }
                        },
                    },
                    "overrides": [],
                },
                "options": {
                    "legend": {
                        "displayMode": "list",
                        "placement": "bottom",
                        "showLegend": True,
                        "calcs": [],
                    },
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
            }
        )
    return {
        "uid": config.dashboard_uid,
        "title": config.title,
        "tags": ["resilience"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        # Grafana's own annotation query: alert state changes drawn on every panel.
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "panels": panels,
    }
